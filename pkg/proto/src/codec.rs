//! The gRPC codec of the public services and the internal Raft service: prost
//! encoding, but a request that is not valid protobuf is the caller's error, so
//! it answers `INVALID_ARGUMENT` with prost's message (which names the message
//! and field) instead of the default `INTERNAL`.

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

#[derive(Debug, Clone)]
pub struct ChronosCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for ChronosCodec<T, U> {
    fn default() -> Self {
        ChronosCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for ChronosCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ChronosDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ChronosDecoder(self.0.decoder())
    }
}

#[derive(Debug)]
pub struct ChronosDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for ChronosDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| match s.code() {
            Code::Internal => {
                Status::invalid_argument(format!("malformed request: {}", s.message()))
            }
            _ => s,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
