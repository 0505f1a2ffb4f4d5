"""Load benchmark of ``claid serve``'s /api/search (see README.md).

    python experiments/bench_serve/bench_serve.py --regions 1000000     # the issue's target size
    python experiments/bench_serve/bench_serve.py --regions 100000      # quicker

Builds (once, reused) a region store with the project's synthetic writer
(``write_synthetic_store``: image ids, boxes, 2048-D float16 vectors, the width of the
``cnn`` descriptor uploads are described with), an IVF-PQ index dir over it through
the pipeline's own index stage (``index=ivfpq``: whitening to 256-D, IVF1024,PQ64)
and JPEG files for the first images, so that image-id and upload queries run the
real (random-weight) descriptor. Then starts ``python -m claid serve`` on 127.0.0.1
and drives it from this process (closed loop: each client thread waits for its
reply) with a bounded number of requests per client: p50 / p99 latency and
throughput at 1, 4 and 16 clients, and the server's ``RssAnon`` after a 100-request
warm-up of every request type and after 2,000 mixed requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DIM = 2048
FILES = 16  # database images given a JPEG (image-id and upload queries)
KINDS = ["region_id", "image_id (cached)", "image_id + box (forward)", "upload (forward)"]


def build(work: Path, regions: int, per_image: int) -> dict:
    """Store, image files and IVF-PQ index dir under ``work`` (reused when present)."""
    from hydra import compose, initialize_config_dir
    from PIL import Image
    from skimage import data

    from claid.config.run_settings import run_settings
    from claid.index.index_stage import index_stage
    from claid.index.search_table import region_table
    from claid.store import RegionStore
    from claid.store.generated import write_synthetic_store

    store_dir = work / "store"
    if not (store_dir / "manifest.json").exists():
        started = time.perf_counter()
        write_synthetic_store(str(store_dir), n_images=regions // per_image, regions_per_image=per_image, dim=DIM)
        print(f"store written: {time.perf_counter() - started:.0f} s", flush=True)
    store = RegionStore.open(str(store_dir))
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for i in range(FILES):
        path = work / "photos" / store.image_ids[i]
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photos[i % 4]).resize((640, 480)).save(path, quality=90)
    overrides = [f"paths.root_dir={work}", "backbone=dino_vits8", "backbone.pretrained=false",
                 "descriptor.pretrained=false", "index=ivfpq", "tracking=none"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    settings = run_settings(cfg).index
    started = time.perf_counter()
    _, index_dir = index_stage(settings, region_table(store, None), {"regions": f"synthetic-{regions}"},
                               work / "cache")
    print(f"index dir ready: {time.perf_counter() - started:.0f} s ({index_dir})", flush=True)
    return {"store": store_dir, "index": index_dir, "photos": work / "photos",
            "regions": int(store.num_regions), "image_ids": store.image_ids[:FILES],
            "sizes": {image_id: (640, 480) for image_id in store.image_ids[:FILES]},
            "label": "IVF1024,PQ64 (index=ivfpq, whitened to 256-D)"}


def build_synthetic(work: Path) -> dict:
    """The synthetic benchmark's run (reused when present): run.py's default dataset and
    index (``index=flat``, exact), with the small ``dino_vits16`` detector (random
    weights) so that it builds in minutes on a CPU; its database images are the files."""
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from claid.pipeline import run
    from claid.store import RegionStore

    run_dir = work / "run"
    if not (run_dir / "metrics.json").exists():
        overrides = [f"paths.root_dir={work}", f"paths.output_dir={run_dir}", "backbone=dino_vits16",
                     "backbone.pretrained=false", "descriptor.pretrained=false", "tracking=none"]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        started = time.perf_counter()
        run(cfg, run_dir=run_dir)
        print(f"synthetic run: {time.perf_counter() - started:.0f} s", flush=True)
    settings = json.loads((run_dir / "metrics.json").read_text())["settings"]
    store = RegionStore.open(settings["store"])
    sizes = {image_id: Image.open(Path(settings["image_root"]) / image_id).size
             for image_id in store.image_ids[:FILES]}
    return {"store": settings["store"], "index": settings["index"], "photos": Path(settings["image_root"]),
            "regions": int(store.num_regions), "image_ids": store.image_ids[:FILES], "sizes": sizes,
            "label": f"the synthetic benchmark's run ({store.num_images} images, flat exact index)"}


class Client:
    """One keep-alive HTTP/1.1 connection, spoken over a raw socket: the load generator
    shares the 2 cores with the server, so it should cost little (``http.client`` took
    about twice the CPU per request)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def post(self, body: bytes, content_type: str) -> tuple[float, dict]:
        started = time.perf_counter()
        self.sock.sendall(f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status, payload = self._response()
        elapsed = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"{status}: {payload}")
        return elapsed, payload

    def _response(self) -> tuple[int, dict]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        lengths = [int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:")]
        if not lengths:
            raise RuntimeError(f"no content-length in the answer: {head[:200]!r}")
        while len(self.buffer) < lengths[0]:
            self._fill()
        body, self.buffer = self.buffer[:lengths[0]], self.buffer[lengths[0]:]
        return int(lines[0].split()[1]), json.loads(body)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk


def request_maker(kind: str, setup: dict, rng: random.Random, photo: bytes):
    """A function () -> (body, content type) for one request of ``kind``."""
    def region():
        return json.dumps({"region_id": rng.randrange(setup["regions"]), "top": 10}).encode(), "application/json"

    def cached():
        return json.dumps({"image_id": rng.choice(setup["image_ids"]), "top": 10}).encode(), "application/json"

    def boxed():  # a new box each time, inside the image: one forward per request
        image_id = rng.choice(setup["image_ids"])
        width, height = setup["sizes"][image_id]
        w, h = rng.randrange(width // 5, width // 2), rng.randrange(height // 5, height // 2)
        x, y = rng.randrange(0, width - w), rng.randrange(0, height - h)
        return json.dumps({"image_id": image_id, "box": [x, y, x + w, y + h], "top": 10}).encode(), \
            "application/json"

    def upload():
        boundary = "claidbench"
        parts = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n"
                 "Content-Type: image/jpeg\r\n\r\n").encode() + photo + \
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"top\"\r\n\r\n10\r\n--{boundary}--\r\n".encode()
        return parts, f"multipart/form-data; boundary={boundary}"

    return {"region_id": region, "image_id (cached)": cached, "image_id + box (forward)": boxed,
            "upload (forward)": upload}[kind]


def closed_loop(port: int, make, clients: int, per_client: int) -> dict:
    """``clients`` threads, each sending ``per_client`` requests one after the other."""
    latencies, forwards, errors = [], [], []
    lock = threading.Lock()

    def worker():
        client = Client(port)
        for _ in range(per_client):
            try:
                elapsed, payload = client.post(*make())
            except Exception as err:  # noqa: BLE001 - counted and shown
                with lock:
                    errors.append(str(err)[:200])
                continue
            with lock:
                latencies.append(elapsed)
                if payload.get("forward_ms") is not None:
                    forwards.append(payload["forward_ms"])

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "first_error": errors[:1],
            "p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
            "p99_ms": float(np.percentile(ms, 99)) if ms.size else None,
            "throughput_rps": len(latencies) / wall,
            "forward_ms_p50": float(np.median(forwards)) if forwards else None}


def rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regions", type=int, default=1_000_000)
    parser.add_argument("--synthetic", action="store_true",
                        help="serve the synthetic benchmark's run instead of generated vectors")
    parser.add_argument("--regions-per-image", type=int, default=20)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_serve")
    parser.add_argument("--per-client", type=int, default=200, help="requests per client, fast kinds")
    parser.add_argument("--forward-requests", type=int, default=24, help="requests per forward kind and client count")
    parser.add_argument("--mixed", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=KINDS,
                        help="request kinds to time (the warm-up and the mixed run use all)")
    args = parser.parse_args()
    name = "synthetic" if args.synthetic else f"r{args.regions}"
    setup = (build_synthetic(args.work / name) if args.synthetic
             else build(args.work / name, args.regions, args.regions_per_image))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "claid", "serve", "--index-dir", str(setup["index"]), "--store", str(setup["store"]),
         "--images", str(setup["photos"]), "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):  # bounded: 60 s
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/health")
                health = json.loads(conn.getresponse().read())
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the server did not start: " + server.stderr.read1().decode()[-2000:])
        rng = random.Random(0)
        photo = (setup["photos"] / setup["image_ids"][1]).read_bytes()
        kinds = KINDS  # the warm-up and the mixed run use every kind, whatever --kinds times
        makers = {kind: request_maker(kind, setup, rng, photo) for kind in kinds}
        # warm-up: every request type (the network loads here), each image's vector cached
        first = []  # each image's first query: one whole-image forward, then cached
        for image_id in setup["image_ids"]:
            elapsed, payload = Client(port).post(json.dumps({"image_id": image_id}).encode(), "application/json")
            first.append((elapsed * 1000, payload["forward_ms"]))
        for i in range(100 - FILES):
            Client(port).post(*makers[kinds[i % 4]]())
        rss_warm = rss_anon_kib(server.pid)
        # memory: 2,000 mixed requests right after the warm-up (4 clients; mostly the
        # fast kinds, as a page session is, plus forwards), then the latency rows
        mix = [kinds[0]] * 70 + [kinds[1]] * 26 + [kinds[2]] * 2 + [kinds[3]] * 2

        def mixed():
            return makers[rng.choice(mix)]()

        done = closed_loop(port, mixed, 4, args.mixed // 4)
        rss_after = rss_anon_kib(server.pid)
        print(f"RssAnon {rss_warm / 1024:.0f} MiB after the warm-up, {rss_after / 1024:.0f} MiB after "
              f"{done['requests']} mixed requests", flush=True)
        ms = np.array([e for e, _ in first[1:]])  # the very first also builds the network
        rows = [{"kind": "image_id (first: forward)", "clients": 1, "requests": len(ms), "errors": 0,
                 "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                 "throughput_rps": 1000 / ms.mean(), "forward_ms_p50": float(np.median([f for _, f in first[1:]])),
                 "network_build_ms": first[0][0]}]
        for kind in args.kinds:
            forward = "forward" in kind
            for clients in (1, 4, 16):
                per = max(1, args.forward_requests // clients) if forward else args.per_client
                row = closed_loop(port, makers[kind], clients, per)
                rows.append({"kind": kind, **row})
                print(json.dumps(rows[-1]), flush=True)
        rss_end = rss_anon_kib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    memory = {"rss_anon_after_warmup_MiB": rss_warm / 1024, "rss_anon_after_mixed_MiB": rss_after / 1024,
              "mixed_requests": done["requests"], "mixed_errors": done["errors"],
              "ratio": rss_after / rss_warm, "rss_anon_after_the_latency_rows_MiB": rss_end / 1024}
    result = {"regions": setup["regions"], "index": setup["label"],
              "descriptor": health["descriptor"], "workers": health["workers"], "threads": health["threads"],
              "rows": rows, "memory": memory}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench_serve_{name}.json").write_text(json.dumps(result, indent=1))
    print(f"\n{setup['regions']} regions, {result['index']}, descriptor {health['descriptor']} (random weights), "
          f"pool {health['workers']} worker x {health['threads']} thread(s)\n")
    print("| query | clients | requests | p50 ms | p99 ms | req/s | forward ms (p50) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        forward = "" if row["forward_ms_p50"] is None else f"{row['forward_ms_p50']:.0f}"
        print(f"| {row['kind']} | {row['clients']} | {row['requests']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
              f"| {row['throughput_rps']:.0f} | {forward} |")
    print(f"\nthe very first query (the descriptor network built, then one forward): "
          f"{rows[0]['network_build_ms']:.0f} ms")
    print(f"RssAnon: {memory['rss_anon_after_warmup_MiB']:.0f} MiB after the 100-request warm-up, "
          f"{memory['rss_anon_after_mixed_MiB']:.0f} MiB after {memory['mixed_requests']} mixed requests "
          f"({memory['mixed_errors']} errors): x{memory['ratio']:.3f}; "
          f"{memory['rss_anon_after_the_latency_rows_MiB']:.0f} MiB after the latency rows too")


if __name__ == "__main__":
    main()
