#!/usr/bin/env python3
"""Drives the web console in headless Chromium against a running server with
data in it (seeded by tests/console.rs): every page loads, its numbers match
the HTTP API's, a cancel, a redrive, a group's seek and delete are clicked
and confirmed, and each
page is saved as a screenshot.

Usage: check_console.py --url http://127.0.0.1:PORT --shots DIR
Prints "ok: ..." per check; exits non-zero at the first failure.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

WAIT_S = 20


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--shots", required=True)
    args = p.parse_args()
    base = args.url.rstrip("/")
    os.makedirs(args.shots, exist_ok=True)

    def api(path, body=None):
        req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts)
    wait = WebDriverWait(driver, WAIT_S)

    def text_of(css):
        return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css))).text

    def rows(css):
        return [r for r in driver.find_elements(By.CSS_SELECTOR, f"{css} tbody tr")
                if "none" != r.text.strip()]

    def shot(name):
        path = os.path.join(args.shots, f"{name}.png")
        driver.save_screenshot(path)
        print(f"ok: screenshot {path}")

    def until(what, check):
        deadline = time.time() + WAIT_S
        while True:
            try:
                if check():
                    return
            except StaleElementReferenceException:
                pass  # the page redrew while it was read: read it again
            if time.time() > deadline:
                raise AssertionError(f"{what}: not within {WAIT_S} s")
            time.sleep(0.1)

    def click(css):
        """Clicks the element, again if the page redrew it in between (it
        polls the API each second and redraws what changed)."""
        def clicked():
            driver.find_element(By.CSS_SELECTOR, css).click()
            return True
        until(f"click {css}", clicked)

    try:
        # Overview: the counts are the API's.
        t0 = time.time()
        driver.get(base + "/#/")
        cluster = api("/v1/cluster")
        pending = sum(int(p["pending"]) for p in cluster["partitions"])
        assert text_of("#stat-pending") == f"{pending:,}", (text_of("#stat-pending"), pending)
        print(f"ok: overview loaded in {time.time() - t0:.2f} s with {pending} pending")
        assert len(rows("#partitions")) == len(cluster["partitions"]) == 8
        topics = api("/v1/topics")["topics"]
        assert text_of("#stat-topics") == str(len(topics))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#rates canvas")))
        until("the rates chart gets a point", lambda: driver.execute_script(
            "return document.querySelector('#rates .u-legend') !== null"))
        # Nothing but this origin was loaded.
        for src in driver.execute_script(
                "return [...document.querySelectorAll('script[src],link[href]')].map(e => e.src || e.href)"):
            assert src.startswith(base + "/"), src
        print("ok: overview numbers match the API; assets from this origin only")
        time.sleep(3.5)  # a few polls of /metrics, so the chart has a line
        shot("overview")

        # Topics.
        driver.get(base + "/#/topics")
        text_of("#topics")
        want = {t["name"]: int(t["pending"]) for t in topics}
        got = {r.find_elements(By.TAG_NAME, "td")[0].text: int(r.find_elements(By.TAG_NAME, "td")[1].text.replace(",", ""))
               for r in rows("#topics")}
        assert got == want, (got, want)
        print(f"ok: topics page lists {want}")
        shot("topics")

        # One topic: what comes due, the pending list, a cancel.
        driver.get(base + "/#/topics/orders")
        listed = api("/v1/topics/orders/pending?page_size=1000")["events"]
        until("the pending list", lambda: len(rows(".pending-page")) == len(listed))
        assert text_of("#stat-due") == f"{len(listed):,}", (text_of("#stat-due"), len(listed))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#due-chart canvas")))
        print(f"ok: topic page shows {len(listed)} pending, as the API")
        shot("topic")
        first = driver.find_element(By.CSS_SELECTOR, ".pending-page button[data-cancel]")
        victim = first.get_attribute("data-cancel")
        first.click()
        wait.until(EC.alert_is_present())
        driver.switch_to.alert.accept()
        until("the cancel takes effect", lambda: all(
            e["event"]["message_id"] != victim for e in api("/v1/topics/orders/pending?page_size=1000")["events"]))
        until("the page redraws", lambda: len(rows(".pending-page")) == len(listed) - 1)
        assert "cancelled " + victim in text_of("#flash")
        print(f"ok: cancel of {victim} from the page (confirmed)")

        # Events: find by message id prefix.
        driver.get(base + "/#/events?topic=orders&message_id_prefix=o-1")
        found = api("/v1/topics/orders/events?message_id_prefix=o-1&page_size=100")["events"]
        until("search results", lambda: len(rows("#found-events")) == len(found))
        until("every row's state", lambda: all(
            r.find_elements(By.TAG_NAME, "td")[4].text for r in rows("#found-events")))
        states = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[4].text
                  for r in rows("#found-events")}
        want = {e["event"]["message_id"]: "cancelled" if e["event"]["message_id"] == victim else "pending"
                for e in found}
        assert states == want, (states, want)
        print(f"ok: events page finds {len(found)} by prefix, each in its state")
        shot("events")

        # One event: where each group is with it (a dead letter, then an acked one).
        driver.get(base + "/#/event/jobs/j-3")
        described = api("/v1/topics/jobs/events/j-3")
        assert described["status"] == "EVENT_STATUS_FIRED", described
        # Two groups: workers, and auditors (joined after the event fired).
        until("the event's groups", lambda: len(rows("#event-groups")) == len(described["groups"]) == 2)
        assert text_of("#stat-state") == "fired"

        def cells_of(group):
            return next([c.text for c in r.find_elements(By.TAG_NAME, "td")]
                        for r in rows("#event-groups") if r.text.startswith(group + " "))

        cells = cells_of("workers")
        dead = next(g for g in described["groups"] if g["group"] == "workers")
        assert cells[1] == "dead", (cells, dead)
        assert cells[4] == dead["reason"] != "", (cells, dead)
        shot("event")
        driver.get(base + "/#/event/jobs/j-0")
        until("an acked event", lambda: cells_of("workers")[1] == "acked")
        print("ok: event page shows each group's state as the API (dead, acked)")

        # Groups, then a dead letter redriven from the page.
        driver.get(base + "/#/groups")
        text_of("#groups")
        groups = api("/v1/groups")["groups"]
        workers = next(g for g in groups if g["name"] == "workers")
        cells = next(r for r in rows("#groups") if "workers" in r.text).find_elements(By.TAG_NAME, "td")
        assert cells[6].text == str(workers["dead_letters"]) == "1", (cells[6].text, workers)
        print("ok: groups page shows the dead letter count of the API")
        shot("groups")
        driver.get(base + "/#/groups/jobs/workers")
        until("the dead letter row", lambda: len(rows("#dead-letters")) == 1)
        dead = api("/v1/topics/jobs/groups/workers/dead-letters")["dead_letters"]
        assert dead[0]["reason"] in rows("#dead-letters")[0].text
        shot("dead-letters")
        click("#dead-letters button[data-redrive]")
        wait.until(EC.alert_is_present())
        driver.switch_to.alert.accept()
        until("the redrive takes effect",
              lambda: not api("/v1/topics/jobs/groups/workers/dead-letters")["dead_letters"])
        assert "redriven: 1" in text_of("#flash")
        print("ok: redrive from the page (confirmed)")

        # A group nobody consumes: sought back to the start, then deleted.
        auditors = "/v1/topics/jobs/groups/auditors"
        until("the auditors' member is gone", lambda: int(api(auditors)["group"]["members"]) == 0)
        # Its lag counts what fired for it after it joined (not the redrive
        # above, a record for workers alone); the seek adds the five jobs.
        before = int(api(auditors)["group"]["lag"])
        driver.get(base + "/#/groups/jobs/auditors")
        text_of("#stat-lag")
        click("#seek-group")
        wait.until(EC.alert_is_present())
        driver.switch_to.alert.send_keys("2000-01-01T00:00:00Z")
        driver.switch_to.alert.accept()
        wait.until(EC.alert_is_present())
        assert "2000-01-01T00:00:00.000Z" in driver.switch_to.alert.text, driver.switch_to.alert.text
        driver.switch_to.alert.accept()
        until("the seek takes effect", lambda: int(api(auditors)["group"]["lag"]) == before + 5)
        assert "auditors now delivers the events due from 2000-01-01T00:00:00Z" in text_of("#flash")
        until("the page redraws", lambda: text_of("#stat-lag") == str(before + 5))
        print(f"ok: seek from the page (prompted, confirmed): lag {before} -> {before + 5}")
        click("#delete-group")
        wait.until(EC.alert_is_present())
        driver.switch_to.alert.accept()
        until("the groups list without auditors", lambda: driver.execute_script("return location.hash") == "#/groups"
              and rows("#groups") and all("auditors" not in r.text for r in rows("#groups")))
        assert "deleted auditors" in text_of("#flash"), text_of("#flash")
        try:
            api(auditors)
            raise AssertionError("the deleted group is still described")
        except urllib.error.HTTPError as err:
            assert err.code == 404, err
        print("ok: delete from the page (confirmed): the group is gone")
    finally:
        driver.quit()
    print("all console checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
