"""`cambatch gallery`: the static page, its thumbnails, and the page itself in headless Chromium.

The browser tier drives Debian's chromium through Playwright (never a downloaded browser). Where
playwright or /usr/bin/chromium is missing it is skipped, except under CI, where it must run.
Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import REPO, SAMPLES
from identity_support import PHOTOS, two_folders_run
from inspecting_support import add_labels, copy_run, rewrite_report, synthesize_run
from PIL import Image
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app
from cambatch.inspection.gallery import THUMB_SIDE

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = REPO / "build" / "test-artifacts"
runner = CliRunner()


def head_data(index: Path) -> dict:
    html = index.read_text(encoding="utf-8")
    return json.loads(
        re.search(r'<script id="gallery-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    )


def _named(fields: list[str], rows: list[list]) -> list[dict]:
    return [dict(zip(fields, row, strict=True)) for row in rows]


def page_data(index: Path) -> dict:
    """The head data with every card (read from the chunks as the page reads them: fields by the names the head
    data gives) as `images`, each with its explained classes as `x`.
    """
    data = head_data(index)
    images = []
    for _, rel, count in data["chunks"]:
        text = (index.parent / rel).read_text(encoding="utf-8")
        chunk = json.loads(text[text.index("{") : text.rindex("}") + 1])
        cards = _named(data["fields"]["image"], chunk["images"])
        for card in cards:
            card["x"] = []
        for row in _named(data["fields"]["explained"], chunk["explained"]):
            cards[row["i"]]["x"].append(row)
        assert len(cards) == count
        images += cards
    return {**data, "images": images}


@pytest.fixture(scope="module")
def labelled_run(sample_run, tmp_path_factory):
    """The real sample run with labels on four images (one of them wrong) and its gallery."""
    result, raw = sample_run
    out = copy_run(result.out, tmp_path_factory.mktemp("gallery") / "sample")
    top1 = raw[raw["rank"] == 1].set_index("path").class_name
    add_labels(
        out,
        {
            "coffee.png": "espresso",
            "camera.png": "tripod",
            "chelsea.png": str(top1["chelsea.png"]),
            "rocket.jpg": "space shuttle",
        },
    )
    made = cambatch.build_gallery(out)
    return out, made, raw


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """3,000 synthetic images (labels, 40 classes, 5 failures) and their gallery."""
    out = synthesize_run(tmp_path_factory.mktemp("gallery-big") / "run", images=3000, classes=40, errors=5)
    return out, cambatch.build_gallery(out)


def test_gallery_files_thumbnails_and_embedded_data(labelled_run):
    out, made, raw = labelled_run
    assert made.index == out / "gallery" / "index.html" and made.images == 7 and made.errors == 0
    assert made.thumbnails_written == 14 and not made.thumbnail_failures  # grid thumbnail + photo per image
    data = page_data(made.index)
    assert len(data["images"]) == 7 and data["meta"]["model"] == "efficientnet_lite0"
    top1 = raw[raw["rank"] == 1].set_index("path")
    for image in data["images"]:
        assert data["classes"][image["c"]] == top1.loc[image["p"], "class_name"]
        assert len(image["x"]) == 3 and [x["rank"] for x in image["x"]] == [1, 2, 3]
        thumb = Image.open(made.index.parent / image["t"])
        assert max(thumb.size) <= THUMB_SIDE  # the grid never loads full-size overlays
        assert all((made.index.parent / x["overlay"]).resolve().is_file() for x in image["x"])
    wrong = [i for i in data["images"] if i["p"] == "rocket.jpg"][0]
    assert data["labels"][wrong["l"]] == "space shuttle" and wrong["ok"] is False
    html = made.index.read_text(encoding="utf-8")
    # Self-contained: nothing fetched from a network (no CDN, no web fonts).
    assert not re.search(r'(src|href)="(https?:)?//', html) and "@import" not in html


def test_rebuild_reuses_fresh_thumbnails(labelled_run):
    out, _, _ = labelled_run
    again = cambatch.build_gallery(out)
    assert (again.thumbnails_written, again.thumbnails_fresh) == (0, 14)


def test_without_overlays_cards_show_the_photo(labelled_run, tmp_path):
    out = copy_run(labelled_run[0], tmp_path / "no-overlays")
    shutil.rmtree(out / "overlays")
    made = cambatch.build_gallery(out)
    data = page_data(made.index)
    assert all(image["t"] and all(x["overlay"] is None for x in image["x"]) for image in data["images"])


def test_errors_are_listed_escaped_and_counted(tmp_path):
    out = synthesize_run(tmp_path / "run", images=20, classes=4, errors=3)
    hostile = "odd/</script><b>x.jpg"

    def change(table):
        rows = table.to_pylist()
        for row in rows:
            if row["path"] == "broken/bad_0.jpg":
                row["error"] = "<script>alert(1)</script>"
            if row["path"] == "class_01/img_00001.jpg":
                row["path"] = hostile
        return pa.Table.from_pylist(rows, schema=table.schema)

    rewrite_report(out, change)
    made = cambatch.build_gallery(out)
    html = made.index.read_text(encoding="utf-8")
    assert made.errors == 3 and html.count("not a readable image: unknown format") == 2
    assert "broken/bad_2.jpg" in html
    # Text from the report never becomes markup: escaped in the table, \u003c in the JSON.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert "</script><b>" not in html and hostile in [i["p"] for i in page_data(made.index)["images"]]


def test_cli_gallery_and_run_with_gallery(labelled_run, tmp_path):
    made = runner.invoke(app, ["gallery", str(labelled_run[0]), "--group-by", "label", "--page-size", "30"])
    assert made.exit_code == 0 and "gallery of 7 images" in made.output
    assert 'value="label" selected' in (labelled_run[0] / "gallery" / "index.html").read_text(encoding="utf-8")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "coffee.png", photos)
    run = runner.invoke(
        app,
        ["run", str(photos), "--out", str(tmp_path / "out"), "--topk", "1", "--workers", "0", "--quiet", "--gallery"],
    )
    assert run.exit_code == 0, run.output
    assert page_data(tmp_path / "out" / "gallery" / "index.html")["images"][0]["p"] == "coffee.png"


def test_thousands_of_images_stay_one_page_of_data(big_run):
    out, made = big_run
    assert made.images == 3000 and made.errors == 5 and not made.thumbnail_failures
    size = made.index.stat().st_size
    # One page holds the data of all images but no <img> of its own: the grid is built a page at a time.
    assert size < 3_000_000 and made.index.read_text(encoding="utf-8").count("<img") == 0


# ---- the browser tier ----


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests must run in CI: {reason} (.ci/run installs chromium and playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.errors = []
    opened.on("pageerror", lambda exc: opened.errors.append(str(exc)))
    opened.on("console", lambda msg: opened.errors.append(msg.text) if msg.type == "error" else None)
    yield opened
    context.close()


def visible_classes(page) -> list[str]:
    return page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.class)")


def all_card_images_loaded(page) -> bool:
    """Every card image decoded with a real size (lazy images are scrolled into view first)."""
    page.eval_on_selector_all(".card img", "imgs => imgs.forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.querySelectorAll('.card img')).every(i => i.complete)")
    return page.eval_on_selector_all(".card img", "imgs => imgs.length > 0 && imgs.every(i => i.naturalWidth > 0)")


@pytest.mark.browser
def test_sample_gallery_in_chromium(labelled_run, page):
    out, made, raw = labelled_run
    page.goto(made.index.as_uri())
    page.wait_for_selector(".card")
    assert len(visible_classes(page)) == 7
    assert all_card_images_loaded(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gallery-sample.png"), full_page=True)

    # Filtering by a class leaves only that class.
    page.select_option("#f-class", "espresso")
    assert visible_classes(page) == ["espresso"]
    assert "espresso" in page.url  # the view is kept in the URL hash
    # Opening a card shows the photo beside each explained class's full-size overlay.
    page.click(".card")
    page.wait_for_selector("dialog[open] figure img")
    page.wait_for_function("Array.from(document.querySelectorAll('dialog img')).every(i => i.complete)")
    sizes = page.eval_on_selector_all("dialog img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(sizes) == 4 and min(sizes) > 0  # photo + top-3 overlays
    page.screenshot(path=str(ARTIFACTS / "gallery-sample-detail.png"))
    page.keyboard.press("Escape")
    assert page.eval_on_selector("dialog", "d => d.open") is False

    # Labels: the wrong prediction is marked, and the "wrong" filter finds it.
    page.select_option("#f-class", "")
    page.select_option("#f-correct", "wrong")
    assert page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.path)") == ["rocket.jpg"]
    assert page.errors == []


@pytest.mark.browser
def test_three_thousand_images_paginate_and_filter(big_run, page):
    out, made = big_run
    top = cambatch.load_report(out, status="ok", rank=1).astype({"class_name": str})
    page.goto(made.index.as_uri())
    page.wait_for_selector(".card")
    assert page.locator(".card").count() == 60  # one page in the document, not 3,000 cards
    assert page.locator("img").count() <= 60
    assert "1–60 of 3,000" in page.inner_text("#count")
    assert all_card_images_loaded(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gallery-3000.png"))

    first = page.eval_on_selector(".card", "c => c.dataset.path")
    page.click("#next")
    assert "61–120 of 3,000" in page.inner_text("#count")
    assert page.eval_on_selector(".card", "c => c.dataset.path") != first

    page.select_option("#f-class", "class 07")
    expected = int((top["class_name"] == "class 07").sum())
    assert set(visible_classes(page)) == {"class 07"} and len(visible_classes(page)) == min(60, expected)
    assert f"of {expected}" in page.inner_text("#count")

    page.select_option("#f-class", "")
    page.select_option("#f-correct", "wrong")
    wrong = int((~top["correct"].astype(bool)).sum())
    assert f"of {wrong:,}" in page.inner_text("#count")
    assert page.eval_on_selector_all(".card", "cs => cs.every(c => c.classList.contains('wrong'))")

    # The view survives a reload (state in the URL hash), and the errors section lists the failures.
    page.reload()
    page.wait_for_selector(".card")
    assert page.input_value("#f-correct") == "wrong"
    assert page.locator("#errors tbody tr").count() == 5
    assert page.errors == []


# ---- mean maps and cluster strips (a shortcut made on purpose: tests/shortcut_support.py) ----


@pytest.fixture(scope="module")
def stamp_gallery(stamped_run, tmp_path_factory):
    out, kinds = stamped_run
    out = copy_run(out, tmp_path_factory.mktemp("stamp-gallery") / "out")
    return out, kinds, cambatch.build_gallery(out)


def test_groups_carry_mean_maps_cluster_strips_and_images_their_cluster(stamp_gallery):
    out, kinds, made = stamp_gallery
    data = page_data(made.index)
    stamp = data["groups"]["class"]["stamp_bird"]
    assert "fixed-location" in stamp["flags"] and stamp["pl"] > 0.3
    for rel in [stamp["mm"], *(c["mm"] for c in stamp["cl"])]:
        with Image.open(out / "gallery" / rel) as picture:
            assert picture.size[0] > 0
    assert [c["n"] for c in stamp["cl"]] == [10, 5]
    assert all(kinds[p] == "stamped" for p in stamp["cl"][0]["ex"])  # named as their cards name them
    green = data["groups"]["class"]["green_ball"]
    assert "mm" in green and "cl" not in green and "fixed-location" not in green["flags"]
    stamp_id = data["classes"].index("stamp_bird")
    clusters = {image["p"]: stamp["km"][image["kc"]] for image in data["images"] if image["c"] == stamp_id}
    assert {clusters[p] for p, k in kinds.items() if k == "stamped"} == {0}


@pytest.mark.browser
def test_mean_maps_and_cluster_strips_in_chromium(stamp_gallery, page):
    out, kinds, made = stamp_gallery
    page.goto(made.index.as_uri())
    page.wait_for_selector(".card")
    page.wait_for_function("Array.from(document.querySelectorAll('.group-head img')).every(i => i.complete)")
    loaded = page.eval_on_selector_all(".mean-map img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(loaded) == 2 and min(loaded) > 0  # one mean map per class group
    head = page.locator(".group-head", has=page.locator('[data-group="stamp_bird"]'))
    assert "fixed-location" in head.inner_text()
    assert head.locator(".strip").count() == 2
    strip_images = head.locator(".strip img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert len(strip_images) >= 3 and min(strip_images) > 0  # each strip's mean map and its examples
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gallery-shortcut-clusters.png"), full_page=True)

    # Filtering by cluster 1 of stamp_bird leaves exactly the stamped photos.
    page.select_option("#f-class", "stamp_bird")
    page.select_option("#f-cluster", "0")
    paths = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.path)")
    assert sorted(paths) == sorted(p for p, k in kinds.items() if k == "stamped")
    assert "cluster=0" in page.url
    assert page.errors == []


# ---- boxes in the detail view ----

GALLERY_JS = REPO / "cambatch" / "inspection" / "templates" / "gallery.js"


@pytest.fixture(scope="module")
def boxed_gallery(tmp_path_factory):
    """A real run of two photos with a ground-truth box on the first, and its gallery."""
    from conftest import make_folder

    root = tmp_path_factory.mktemp("gallery-boxes")
    names = make_folder(root / "photos", 2)  # 160 x 120
    csv = root / "boxes.csv"
    csv.write_text(f"path,x0,y0,x1,y1\n{names[0]},20,10,100,90\n{names[0]},5,60,30,110\n")
    out = root / "out"
    cambatch.run(root / "photos", out, annotations=csv, topk=2, progress=False, workers=0)
    return out, names, cambatch.build_gallery(out)


def test_detail_data_holds_the_ground_truth_and_cam_boxes_in_displayed_pixels(boxed_gallery):
    out, names, made = boxed_gallery
    images = {image["p"]: image for image in page_data(made.index)["images"]}
    assert images[names[0]]["g"] == [[20.0, 10.0, 100.0, 90.0], [5.0, 60.0, 30.0, 110.0]]
    assert images[names[1]]["g"] is None  # not annotated: no box drawn
    report = cambatch.load_report(out).set_index(["path", "rank"])
    for name in names:
        for x in images[name]["x"]:
            row = report.loc[(name, x["rank"])]
            expected = [row.bbox_x0 * 160, row.bbox_y0 * 120, row.bbox_x1 * 160, row.bbox_y1 * 120]
            assert x["box"] == pytest.approx(expected, abs=0.05)


def _boxes_svg(*args) -> str:
    """The page's own `boxesSvg`, run by node (the detail view inserts what it returns)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the browser test checks the drawn boxes)")
    source = GALLERY_JS.read_text(encoding="utf-8")
    function = re.search(r"^function boxesSvg\(.*?^}\n", source, re.S | re.M).group(0)
    script = f"{function}\nprocess.stdout.write(boxesSvg(...{json.dumps(list(args))}));"
    return subprocess.run([node, "-e", script], capture_output=True, text=True, check=True).stdout


def test_detail_view_svg_draws_the_boxes_at_their_coordinates():
    svg = _boxes_svg(160, 120, [[20, 10, 100, 90], [5, 60, 30, 110]], [8.5, 4, 150, 100])
    assert svg.startswith('<svg class="boxes" viewBox="0 0 160 120" preserveAspectRatio="xMidYMid meet">')
    # ground truth: inclusive pixel indices, so 20..100 is 81 pixels wide; the CAM box is given by its edges
    assert '<rect class="gt" x="20" y="10" width="81" height="81"/>' in svg
    assert '<rect class="gt" x="5" y="60" width="26" height="51"/>' in svg
    assert '<rect class="cam" x="8.5" y="4" width="141.5" height="96"/>' in svg
    assert _boxes_svg(160, 120, None, None) == ""  # nothing to draw: no layer


@pytest.mark.browser
def test_detail_view_draws_the_boxes_in_chromium(boxed_gallery, page):
    out, names, made = boxed_gallery
    page.goto(made.index.as_uri())
    page.wait_for_selector(".card")
    page.click(f'.card[data-path="{names[0]}"]')
    page.wait_for_selector("dialog[open] svg.boxes")
    photo_rects = page.eval_on_selector_all(
        "dialog figure:first-child svg rect",
        "rs => rs.map(r => ['class', 'x', 'y', 'width', 'height'].map(a => r.getAttribute(a)))",
    )
    assert photo_rects == [["gt", "20", "10", "81", "81"], ["gt", "5", "60", "26", "51"]]
    assert page.eval_on_selector_all("dialog rect.cam", "rs => rs.length") == 2  # one per explained class
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gallery-detail-boxes.png"))
    assert page.errors == []


# ---- a run too large for one array: 200,000 images (the page used to go blank above ~120,000) ----


@pytest.fixture(scope="module")
def huge_gallery(tmp_path_factory):
    from inspecting_support import large_report

    out = large_report(tmp_path_factory.mktemp("gallery-huge") / "run", images=200_000, classes=40)
    return out, cambatch.build_gallery(out)


def test_a_huge_run_puts_a_sample_in_the_page_and_every_card_in_chunks(huge_gallery):
    out, made = huge_gallery
    head = head_data(made.index)
    assert made.images == 200_000 and not head["meta"]["eager"]
    assert len(head["sample"]["images"]) <= 40 * 12 + 40 * 8 * 6  # each class's first cards and cluster examples
    assert sum(count for _, _, count in head["chunks"]) == 200_000
    assert made.thumbnails_left == 200_000 - head["meta"]["thumbnails"]  # no pictures to make: all said so
    assert made.index.stat().st_size < 2_000_000


@pytest.mark.browser
def test_a_huge_gallery_shows_pages_filters_and_searches_in_chromium(huge_gallery, page):
    out, made = huge_gallery
    head = head_data(made.index)
    page.goto(made.index.as_uri())
    page.wait_for_selector(".card")
    assert page.locator(".card").count() == 60
    assert "of 200,000 images loaded" in page.inner_text("#coverage")
    first = page.eval_on_selector(".card", "c => c.dataset.path")
    page.click("#next")
    assert "61–120 of" in page.inner_text("#count") and page.eval_on_selector(".card", "c => c.dataset.path") != first

    # Choosing a class loads its chunks: every one of its images, paged.
    page.select_option("#f-class", "class 07")
    expected = head["groups"]["class"]["class 07"]["n"]
    page.wait_for_function(f"document.querySelector('#count').textContent.includes('of {expected:,}')")
    assert set(visible_classes(page)) == {"class 07"}

    # Search (after a pause in typing) within the class.
    path = page.eval_on_selector(".card", "c => c.dataset.path")
    page.fill("#f-text", path)
    page.wait_for_function("document.querySelectorAll('.card').length === 1")
    assert visible_classes(page) == ["class 07"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gallery-200k.png"))
    assert page.errors == []


def test_two_inputs_holding_one_path_are_two_cards_and_two_errors(tmp_path):
    out = two_folders_run(tmp_path)
    made = cambatch.build_gallery(out)
    data = page_data(made.index)
    cards = {image["p"]: image for image in data["images"]}  # each named behind its INPUT's folder
    assert made.images == 2 and set(cards) == {"one/x.png", "two/x.png"}
    for folder, (_, label, box) in PHOTOS.items():
        card = cards[f"{folder}/x.png"]
        assert data["classes"][card["c"]] == data["labels"][card["l"]] == label and card["ok"] is True
        assert card["g"] == [[float(v) for v in box]]  # its own ground truth, not the other's
    assert cards["one/x.png"]["t"] != cards["two/x.png"]["t"]

    def failed(table: pa.Table) -> pa.Table:
        return table.set_column(table.schema.get_field_index("status"), "status", pa.array(["error"] * len(table)))

    rewrite_report(out, failed)
    again = cambatch.build_gallery(out)
    assert (again.images, again.errors) == (0, 2)
    html = again.index.read_text(encoding="utf-8")
    assert "one/x.png" in html and "two/x.png" in html
