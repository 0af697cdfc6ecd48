"""Bytes per pair of every dataset of a proxies file, and bytes written by the edits that add to it.

Runs ``pseudolabel sgm``, ``confidence score`` and ``labels`` (the defaults) on a folder pair and
reports: the file size after each command, the bytes each edit wrote (``wchar`` of ``/proc/self/io``:
every byte handed to ``write``/``pwrite``, the edit log included; the two edits run in this process),
against the bytes of what it added; then the stored bytes per pair of every dataset (its chunks, after
compression), with its stored type and encoding.

    python benchmarks/store_size.py --in ../shared/data/sequences/kitti_odometry_b/left \\
        ../shared/data/sequences/kitti_odometry_b/right --work work/store_size --write
    python benchmarks/store_size.py --proxies some.h5      # only the per-dataset table of an existing file

``--write`` replaces the ``## Proxies file size`` section of BENCHMARKS.md (keeping its hand-written summary).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, machine_description, replace_section

MB = 1e6


def written_bytes() -> int:
    """Bytes this process has handed to write system calls so far (``wchar``; 0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def dataset_table(path: Path) -> tuple[list[tuple[str, str, str, str, float]], int, int]:
    """Per dataset name: stored dtype, encoding, filter, mean stored bytes per pair; the number of pairs and pixels per pair."""
    sizes: dict[str, list[int]] = defaultdict(list)
    kinds: dict[str, tuple[str, str, str]] = {}
    pixels = 0
    with h5py.File(path, "r") as h5file:
        pairs = h5file["pairs"]
        for name in pairs:
            group = pairs[name]
            pixels = max(pixels, int(group.attrs.get("height", 0)) * int(group.attrs.get("width", 0)))

            def visit(dataset_name: str, obj: object) -> None:
                if isinstance(obj, h5py.Dataset):
                    sizes[dataset_name].append(obj.id.get_storage_size())
                    encoding = obj.attrs.get("encoding", b"")
                    encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
                    kinds[dataset_name] = (str(obj.dtype), encoding or "-", (obj.compression or "raw") + ("+shuffle" if obj.shuffle else ""))

            group.visititems(visit)
        count = len(pairs)
    rows = [(name, *kinds[name], sum(values) / max(1, count)) for name, values in sizes.items()]
    rows.sort(key=lambda row: -row[4])
    return rows, count, pixels


def format_dataset_table(path: Path) -> str:
    rows, count, pixels = dataset_table(path)
    total = sum(row[4] for row in rows)
    lines = [
        f"{count} pairs of {pixels} pixels; file {path.stat().st_size / MB / max(1, count):.2f} MB per pair "
        f"(datasets {total / MB:.2f} MB, the rest is HDF5 metadata).",
        "",
        "| dataset | stored as | encoding | filter | MB per pair | bytes per pixel |",
        "|---|---|---|---|---:|---:|",
    ]
    for name, dtype, encoding, compression, size in rows:
        lines.append(f"| `{name}` | {dtype} | {encoding} | {compression} | {size / MB:.3f} | {size / max(1, pixels):.2f} |")
    lines.append(f"| **total** | | | | **{total / MB:.2f}** | {total / max(1, pixels):.2f} |")
    return "\n".join(lines)


def run_in_process(args: list[str]) -> tuple[int, float]:
    """Run a ``pseudolabel`` command in this process; returns the bytes it wrote and its wall time."""
    from pseudolabel.cli.main import main

    before, started = written_bytes(), time.perf_counter()
    main(args, standalone_mode=False)
    return written_bytes() - before, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="inputs", nargs=2, type=Path, metavar=("LEFT", "RIGHT"), help="folders of left and right images")
    parser.add_argument("--work", type=Path, default=Path("work/store_size"), help="folder for the proxies file (replaced)")
    parser.add_argument("--max-disp", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--proxies", type=Path, help="only print the per-dataset table of this existing file")
    parser.add_argument("--write", action="store_true", help="replace the '## Proxies file size' section of BENCHMARKS.md")
    args = parser.parse_args()
    if args.proxies is not None:
        print(format_dataset_table(args.proxies))
        return
    if args.inputs is None:
        parser.error("--in LEFT RIGHT or --proxies FILE")
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    out = args.work / "proxies.h5"
    sgm = [sys.executable, "-m", "pseudolabel.cli.main", "sgm", "--in", str(args.inputs[0]), str(args.inputs[1]), "--out", str(out)]
    started = time.perf_counter()
    subprocess.run([*sgm, "--max-disp", str(args.max_disp), "--workers", str(args.workers)], check=True, stdout=subprocess.DEVNULL)
    sgm_seconds = time.perf_counter() - started
    with h5py.File(out, "r") as h5file:
        count = len(h5file["pairs"])
    sizes = {"sgm": out.stat().st_size}
    stages = [("confidence score", ["confidence", "score", "--proxies", str(out)]), ("labels", ["labels", "--proxies", str(out), "--tau", "0.9"])]
    rows = [f"| `sgm --max-disp {args.max_disp} --workers {args.workers}` | {sizes['sgm'] / MB / count:.2f} | {sgm_seconds:.0f} | (new file) | - |"]
    previous = sizes["sgm"]
    for name, command in stages:
        written, seconds = run_in_process(command)
        size = out.stat().st_size
        added = size - previous
        rows.append(
            f"| `{name}` | {size / MB / count:.2f} | {seconds:.0f} | {written / MB:.1f} MB ({written / max(1, added):.2f}x what it added) | {added / MB:.1f} MB |"
        )
        previous = size
    body = "\n".join(
        [
            "Command: `python benchmarks/store_size.py --in ../shared/data/sequences/kitti_odometry_b/left "
            f"../shared/data/sequences/kitti_odometry_b/right --max-disp {args.max_disp} --workers {args.workers} --write` "
            f"({machine_description()}; the machine is shared: wall times include waiting for the CPU).",
            "",
            f"The default pipeline on {count} pairs. Bytes written: every byte the command handed to `write`/`pwrite` "
            "(`wchar`), its edit log included, against the growth of the file.",
            "",
            "| after | file MB per pair | wall s | bytes written | file grew by |",
            "|---|---:|---:|---|---:|",
            *rows,
            "",
            "Stored bytes per pair of every dataset (chunks after compression), after the three commands:",
            "",
            format_dataset_table(out),
        ]
    )
    print(body)
    if args.write:
        replace_section(REPO_ROOT / "BENCHMARKS.md", "Proxies file size", body)


if __name__ == "__main__":
    main()
