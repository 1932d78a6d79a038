"""Screenshots of the web app's two tabs (docs/img/web_edit.png, docs/img/web_reenact.png).

    python docs/make_figures_web.py [--out docs/img]

Serves apps/web.py on a free 127.0.0.1 port and drives headless Chromium (Selenium with the
system ``chromium`` and ``chromedriver``, as tests/apps/test_web_browser.py): the Edit tab with
scikit-image's public-domain astronaut (``figure_inputs.source_image``) turned by +15 degrees
of yaw, jaw open 0.35 and a smile; the Reenact tab after animating it with the first 24
frames of ``figure_inputs.driving_video`` (the astronaut animated by facegeo's 3DMM-scripted
performance). Nothing of the dev media appears in the screenshots.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_inputs import driving_video, source_image  # noqa: E402

SET_RANGE = """
const el = document.querySelector(arguments[0] + ' input[type=range]');
el.value = arguments[1];
el.dispatchEvent(new Event('input', {bubbles: true}));
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=REPO / "docs" / "img")
    a = p.parse_args()
    out = Path(a.out)
    source, driving = source_image(), driving_video(90)
    torch.set_num_threads(1)
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from facegeo_apps.web import WebApp, free_port, serve

    app = WebApp(256, "cpu")
    port = free_port()
    demo = serve(app, "127.0.0.1", port, block=False)
    opt = Options()
    opt.binary_location = os.environ.get("FACEGEO_CHROMIUM") or shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1500", "--hide-scrollbars"):
        opt.add_argument(arg)
    drv = webdriver.Chrome(service=Service(os.environ.get("FACEGEO_CHROMEDRIVER")
                                           or shutil.which("chromedriver")), options=opt)
    wait = WebDriverWait(drv, 180, poll_frequency=0.2)

    def css(sel):
        return drv.find_elements(By.CSS_SELECTOR, sel)

    def upload(elem_id, path):
        wait.until(lambda d: css(f"#{elem_id} input[type=file]"))[0].send_keys(str(path))

    def settle(sel, old):
        """Wait until the image under ``sel`` differs from ``old`` and is stable for 2 s."""
        def src():
            e = css(f"{sel} img")
            return e[0].get_attribute("src") if e else None
        wait.until(lambda d: src() not in (None, old))
        last, since = src(), time.time()
        while time.time() - since < 2:
            time.sleep(0.2)
            if src() != last:
                last, since = src(), time.time()
        return last

    def shot(name):
        png = out / name
        drv.save_screenshot(str(png))
        im = Image.open(png).convert("RGB")
        im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
        im.save(png, optimize=True)
        print(f"wrote {png} ({png.stat().st_size // 1024} KB)")

    try:
        drv.get(f"http://127.0.0.1:{port}/")
        upload("edit-source", source)
        wait.until(lambda d: "fitted in" in d.find_element(By.ID, "edit-status").text)
        first = settle("#edit-preview", None)
        yaw = float(css("#edit-yaw input[type=number]")[0].get_attribute("value"))
        for sel, value in (("#edit-yaw", yaw + 15), ("#edit-jaw_open", 0.35),
                           ("#edit-smile_l", 0.6), ("#edit-smile_r", 0.6)):
            drv.execute_script(SET_RANGE, sel, value)
        settle("#edit-preview", first)
        drv.execute_script("window.scrollTo(0, 0)")
        shot("web_edit.png")

        drv.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Reenact')]").click()
        upload("reenact-source", source)
        upload("reenact-driving", driving)
        nmax = wait.until(lambda d: css("#reenact-max-frames input"))[0]
        nmax.send_keys(Keys.CONTROL, "a")
        nmax.send_keys("24", Keys.TAB)
        wait.until(lambda d: css("#reenact-driving a"))
        drv.find_element(By.ID, "reenact-run").click()
        wait.until(lambda d: css("#reenact-file a[href]"))
        time.sleep(2)
        drv.execute_script("window.scrollTo(0, 0)")
        shot("web_reenact.png")
    finally:
        drv.quit()
        demo.close()


if __name__ == "__main__":
    main()
