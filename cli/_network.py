"""The options that name a network of the user's (``--model-kwargs``, ``--weights``, ``--adapter``).

``pseudolabel adapt``, ``predict`` and ``eval`` take ``--model package.module:factory`` next to
checkpoints and shipped names, and ``pseudolabel train`` takes ``--arch package.module:factory``; the
options declared here complete it, and :func:`network_spec` turns them into the
:class:`pseudolabel.learn.networks.NetworkSpec` the library resolves. This module never imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pseudolabel.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pseudolabel.learn.networks import NetworkSpec

F = TypeVar("F", bound=Callable[..., object])

MODEL_HELP = (
    "checkpoint (.pt) of `pseudolabel train`/`adapt`, shipped model name (madnet_synth), "
    "or package.module:factory building a torch network of your own (README, 'Your own network')."
)
ADAPTER_HELP = (
    "JSON adapter fields of a network of your own, over those it declares: inputs (unit, 255, symmetric, imagenet, standardize), "
    'multiple, forward_kwargs, train_kwargs, eval_kwargs, sign (positive, negative), freeze_batchnorm; e.g. \'{"multiple": 32, "sign": "negative"}\'.'
)


def network_options(model_kwargs: bool = True) -> Callable[[F], F]:
    """Click decorator adding ``--model-kwargs`` (unless ``model_kwargs`` is false), ``--weights`` and ``--adapter``."""
    options = [
        click.option(
            "--weights",
            default=None,
            type=click.Path(dir_okay=False),
            help="state dict file (torch.save(net.state_dict(), PATH)) of a network of your own, loaded after its factory built it.",
        ),
        click.option("--adapter", "adapter", default=None, help=ADAPTER_HELP),
    ]
    if model_kwargs:
        options.insert(
            0,
            click.option(
                "--model-kwargs",
                default=None,
                help="JSON keyword arguments of the --model factory (or constructor arguments over a checkpoint's).",
            ),
        )

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def json_object(text: str | None, option: str) -> dict[str, Any] | None:
    """A JSON object given on the command line (``None`` when the option is absent).

    Raises:
        InputError: not JSON, or not an object.
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{option} {text!r} is not valid JSON ({error.msg}); e.g. '{{\"iters\": 12}}'") from None
    if not isinstance(value, dict):
        raise InputError(f"{option} {text!r} must be a JSON object, e.g. '{{\"iters\": 12}}'")
    return value


def network_spec(model: str, model_kwargs: str | None = None, weights: str | None = None, adapter: str | None = None) -> NetworkSpec:
    """The :class:`~pseudolabel.learn.networks.NetworkSpec` of ``--model`` and the options of :func:`network_options`."""
    from pseudolabel.learn.networks import NetworkSpec

    return NetworkSpec(model, kwargs=json_object(model_kwargs, "--model-kwargs"), weights=weights, adapter=json_object(adapter, "--adapter"))
