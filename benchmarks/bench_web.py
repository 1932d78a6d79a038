"""Benchmark: the web app's slider latency (apps/web.py, Edit tab).

    python benchmarks/bench_web.py [--source lp_s12.jpg] [--size 256] [--moves 40]
                                   [--threads 1] [--http]

The portrait (from $FACEGEO_MEDIA, default ../shared/media) is fitted once, then the yaw and
jaw-open sliders are swept through ``--moves`` positions (a drag), and each update is timed:

* ``render``   the callback's work: target fit from the slider values + geometric warp
               from the cached fit + conversion to uint8 (``WebApp.render``), wall and
               process CPU time;
* ``+encode``  plus what Gradio does with the returned array (``gr.Image.postprocess``:
               JPEG encoding into its cache folder);
* ``overlay``  ``render`` with the mesh overlay on;
* ``http``     (``--http``) one round trip through the running server (gradio_client ->
               the page's ``on_slide`` event -> the PNG's URL), without a browser's decode
               and paint.

The target is under 100 ms per update at 256 x 256. The load average is printed before and
after: on a shared machine wall-clock times grow with the load, CPU time much less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 100.0


def _stats(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=10)
    return (f"median {statistics.median(ms):6.1f} ms  p90 {q[-1]:6.1f} ms  "
            f"min {min(ms):6.1f} ms  (n={len(ms)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="lp_s12.jpg")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--moves", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--http", action="store_true", help="also time round trips to a server")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    media = Path(os.environ.get("FACEGEO_MEDIA", REPO.parent / "shared" / "media"))
    import gradio as gr

    from facegeo_apps.web import PREVIEW_FORMAT, WebApp

    print(f"{os.cpu_count()} CPUs, torch threads {a.threads}, load average before: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    app = WebApp(a.size, "cpu")
    t0 = time.perf_counter()
    state = app.fit(media / a.source)
    print(f"fit once (detection + 3DMM fit): {state.fit_seconds:.2f} s; with the warm-up "
          f"render: {time.perf_counter() - t0:.2f} s")
    keys = app.keys
    moves = []
    for i in range(a.moves):
        v = dict(state.start)
        t = i / max(1, a.moves - 1)
        v["yaw"] = state.start["yaw"] + 25 * t
        v["jaw_open"] = round(0.6 * t, 2)
        moves.append([v[k] for k in keys])
    image = gr.Image(type="numpy", format=PREVIEW_FORMAT)
    rows = {"render": [], "+encode": [], "overlay": []}
    cpu = []
    for vals in moves:
        c0, t0 = time.process_time(), time.perf_counter()
        img = app.render(state, vals)
        rows["render"].append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
        image.postprocess(img)
        rows["+encode"].append(1000 * (time.perf_counter() - t0))
    for vals in moves:
        t0 = time.perf_counter()
        app.render(state, vals, overlay=True)
        rows["overlay"].append(1000 * (time.perf_counter() - t0))
    print(f"\nslider updates at {a.size}x{a.size} (target < {TARGET_MS:.0f} ms):")
    for k, ms in rows.items():
        print(f"  {k:8s} {_stats(ms)}")
    print(f"  render CPU time: {_stats(cpu)}")
    if a.http:
        from gradio_client import Client, handle_file

        from facegeo_apps.web import free_port, serve

        port = free_port()
        demo = serve(app, "127.0.0.1", port, block=False)
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
            slide = next(n for n in api if n.startswith("/on_slide"))
            client.predict(handle_file(str(media / a.source)), api_name="/on_upload")
            ms = []
            for vals in moves[: min(len(moves), 20)]:
                t0 = time.perf_counter()
                client.predict(*vals, False, api_name=slide)
                ms.append(1000 * (time.perf_counter() - t0))
            print(f"  http     {_stats(ms)}")
        finally:
            demo.close()
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
