"""Checkpoints between a source network and its adapted copy (WiSE-FT style weight averaging).

Writes ``PREFIX_AAA.pt`` with the weights ``(1 - a) * source + a * adapted`` for every ``a`` of
``--alphas``; score each as a source network, e.g. with
``python benchmarks/adaptation_generalisation.py --rigs middlebury --variants "" --model PREFIX_050.pt``.
BENCHMARKS.md, ``## Adaptation on unseen frames of the same rig``, reports what it gave.

Usage::

    python benchmarks/weight_interpolation.py madnet_synth adapted.pt /tmp/mix --alphas 0.25,0.5,0.75
"""

from __future__ import annotations

import argparse

import torch

from pseudolabel.learn.checkpoint import load_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="source network: a checkpoint or a shipped name.")
    parser.add_argument("adapted", help="the network adapted from it (same architecture).")
    parser.add_argument("prefix", help="output path prefix; PREFIX_050.pt is a = 0.5.")
    parser.add_argument("--alphas", default="0.25,0.5,0.75", help="weights a of the adapted network, comma-separated.")
    args = parser.parse_args(argv)
    source, adapted = load_checkpoint(args.source), load_checkpoint(args.adapted)
    if source["arch"] != adapted["arch"]:
        raise SystemExit(f"{args.adapted}: architecture {adapted['arch']!r}, the source is {source['arch']!r}")
    for alpha in (float(text) for text in args.alphas.split(",")):
        payload = dict(adapted, optimizer=None, scheduler=None, scaler=None)
        payload["model"] = {
            name: (1.0 - alpha) * source["model"][name] + alpha * value if torch.is_floating_point(value) else value
            for name, value in adapted["model"].items()
        }
        path = f"{args.prefix}_{round(alpha * 100):03d}.pt"
        torch.save(payload, path)
        print(f"a = {alpha:g}: {path}")


if __name__ == "__main__":
    main()
