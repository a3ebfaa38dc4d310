"""The page of `titlecat serve` in a real browser: headless Chromium (Debian's) driven by Selenium.

Needs `apt-get install chromium chromium-driver` and `pip install -e ".[serve,browser]"`; nothing is downloaded
(the driver is Debian's chromedriver, not Selenium Manager's). Starts `titlecat serve` on a free loopback port,
then checks, as a person would use the page:
1. the pipeline's labels and metrics are shown;
2. titles typed into the box get both answers with scores, the same as POST /v1/label answers;
3. a CSV uploaded through the form (with a review threshold) comes back labelled, downloaded by the browser,
   the same rows as POST /v1/label gives for its titles, with the needs_review column;
and saves a screenshot of the page (--screenshot, docs/serve.png). Exits 1 naming the first check that failed.
Not in CI (CI has no Chromium); run by hand after changing the page or the service.
"""

from __future__ import annotations

import base64
import csv
import io
import socket
import tempfile
import time
from pathlib import Path

import httpx
import typer
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from titlecat.serve import start_server

TYPED = ["Leiterin Vertrieb DACH", "Junior Data Scientist", "Chef de projet marketing", "Head of HR", "12345"]
UPLOADED = ["Geschäftsführer", "Senior Account Manager", "", "Einkäufer", "Praktikant Marketing", "CTO"]
REVIEW_BELOW = 0.9


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def browser(chromium: Path, chromedriver: Path, downloads: Path, width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    driver = webdriver.Chrome(options=options, service=Service(str(chromedriver)))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def check(condition: bool, what: str) -> None:
    if not condition:
        typer.secho(f"✘ {what}", fg="red", err=True)
        raise typer.Exit(1)
    typer.secho(f"✔ {what}", fg="green")


# Read in one script, not element by element: the page replaces its rows on every answer.
READ_ROWS = """
return Array.from(document.querySelectorAll("#results tr")).map((tr) => {
  const row = {status: tr.dataset.status};
  for (const task of arguments[0]) {
    const cell = tr.querySelector(`td[data-task="${task}"]`);
    const label = cell && cell.querySelector("b");
    const score = cell && cell.querySelector(".score");
    row[task] = label ? label.textContent : null;
    row[`${task}_score`] = score ? parseFloat(score.textContent) : null;
  }
  return row;
});
"""


def page_rows(driver: webdriver.Chrome, tasks: list[str]) -> list[dict]:
    return driver.execute_script(READ_ROWS, tasks)


def same_answers(shown: list[dict], answered: list[dict], tasks: list[str]) -> bool:
    """The page's rows against /v1/label's: statuses and labels equal, scores as shown (2 decimals)."""
    return len(shown) == len(answered) and all(
        page["status"] == api["status"]
        and all(page[task] == api[task] for task in tasks)
        and all(
            (page[f"{task}_score"] is None) == (api[f"{task}_score"] is None)
            and (api[f"{task}_score"] is None or abs(page[f"{task}_score"] - api[f"{task}_score"]) <= 0.006)
            for task in tasks
        )
        for page, api in zip(shown, answered, strict=False)
    )


def main(
    model: Path = typer.Argument(Path("training/combined"), exists=True),
    metrics: list[Path] = typer.Option(
        [Path("metrics/cpu/seniority_augmented.json"), Path("metrics/cpu/department_augmented.json")],
        "--metrics",
        help="evaluate's JSON, shown on the page (missing files are left out)",
    ),
    screenshot: Path = typer.Option(Path("docs/serve.png")),
    chromium: Path = typer.Option(Path("/usr/bin/chromium"), exists=True, dir_okay=False),
    chromedriver: Path = typer.Option(Path("/usr/bin/chromedriver"), exists=True, dir_okay=False),
    width: int = typer.Option(1280),
    height: int = typer.Option(1000),
):
    work = Path(tempfile.mkdtemp(prefix="titlecat-page-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(
        model, port, work / "serve.log", [o for path in metrics if path.exists() for o in ("--metrics", str(path))]
    )
    driver = None
    try:
        tasks = list(httpx.get(f"{base}/v1/metadata").json()["tasks"])
        driver = browser(chromium, chromedriver, work / "downloads", width, height)
        wait = WebDriverWait(driver, 30)
        driver.get(f"{base}/")

        # 1. Labels and metrics.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#metadata h3"))
        shown = driver.find_element(By.ID, "metadata").text
        check(all(task in shown for task in tasks), f"the page shows the pipeline's tasks {tasks}")
        check("OOD" in shown or "No metrics" in shown, "the page shows the metrics (or says there are none)")

        # 2. Typing: replace the example titles, key by key, as a person would.
        box = driver.find_element(By.ID, "titles")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        box.send_keys("\n".join(TYPED))
        expected = httpx.post(f"{base}/v1/label", json={"titles": TYPED}).json()["results"]
        try:
            wait.until(lambda d: same_answers(page_rows(d, tasks), expected, tasks))
        except TimeoutException:
            check(False, f"typed titles get the answers of /v1/label: page {page_rows(driver, tasks)}, API {expected}")
        check(True, f"{len(TYPED)} typed titles show both answers with scores, as /v1/label answers them")

        # 3. Upload a CSV through the form; the browser downloads the labelled file.
        source = work / "people.csv"
        with source.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["id", "title"])
            writer.writerows([f"p{index}", title] for index, title in enumerate(UPLOADED))
        driver.find_element(By.ID, "file").send_keys(str(source))
        column = driver.find_element(By.ID, "column")
        column.clear()
        column.send_keys("title")
        driver.find_element(By.ID, "id-column").send_keys("id")
        driver.find_element(By.ID, "review-below").send_keys(str(REVIEW_BELOW))
        driver.find_element(By.ID, "label-file").click()
        wait.until(lambda d: d.find_elements(By.ID, "download"))
        driver.find_element(By.ID, "download").click()
        downloaded = work / "downloads" / "people.labelled.csv"
        deadline = time.monotonic() + 30
        while not downloaded.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        check(downloaded.exists(), "the uploaded CSV comes back as people.labelled.csv")
        rows = list(csv.DictReader(io.StringIO(downloaded.read_text(encoding="utf-8"))))
        answers = httpx.post(f"{base}/v1/label", json={"titles": UPLOADED}).json()["results"]
        as_api = [
            {"status": row["status"]}
            | {task: row[task] or None for task in tasks}
            | {f"{task}_score": float(row[f"{task}_score"]) if row[task] else None for task in tasks}
            for row in rows
        ]
        check(
            [row["id"] for row in rows] == [f"p{index}" for index in range(len(UPLOADED))]
            and [row["title"] for row in rows] == list(UPLOADED)
            and as_api == [{key: answer[key] for key in as_api[0]} for answer in answers],
            f"its {len(rows)} rows hold the ids, titles, statuses and answers of /v1/label",
        )
        flags = [row["needs_review"] for row in rows]
        check(
            flags
            == [
                "" if answer["status"] != "ok" else str(min(answer[f"{t}_score"] for t in tasks) < REVIEW_BELOW)
                for answer in answers
            ]
            and "True" in flags,
            f"the review threshold {REVIEW_BELOW} typed in the form gives the needs_review column: {flags}",
        )
        summary = driver.find_element(By.ID, "file-result").text
        check("rows" in summary and "labelled" in summary, f"the page shows the summary: {summary!r}")

        # The screenshot: the whole page at the window's width, however long it is.
        driver.execute_script("window.scrollTo(0, 0)")
        full = driver.execute_script("return [document.body.scrollWidth, document.documentElement.scrollHeight]")
        clip = {"x": 0, "y": 0, "width": full[0], "height": full[1], "scale": 1}
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        check(screenshot.stat().st_size < 300_000, f"screenshot {screenshot} ({screenshot.stat().st_size:,} bytes)")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    typer.run(main)
