"""The ``cotscope serve`` click command: its options, and the server they build."""

from __future__ import annotations

import click

from cotscope import _options as flags
from resampling._errors import EngineInputError
from resampling._serve._faults import FaultSpec, fault_kinds_text
from resampling._serve._requests import ServeLimits
from resampling._serve._server import CompletionServer, is_loopback

_LIMIT_DEFAULTS = ServeLimits()


@click.command("serve")
@flags.model_option()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Listen address; anything but loopback needs a key.",
)
@flags.int_option("--port", 8000, "0 picks a free port.", minimum=0, maximum=65535)
@click.option(
    "--served-model-name", default=None, help="Name clients send as 'model' (default: the model id)."
)
@flags.device_option()
@flags.batch_size_option("Rollouts decoded together; does not change the results.")
@click.option(
    "--inject-faults",
    "faults",
    default=None,
    metavar="SPEC",
    help="Answer a share of requests with faults, e.g. '429:0.2,500:0.1,timeout:0.05,garbled:0.1' "
    f"(kinds: {fault_kinds_text()}).",
)
@click.option("--fault-seed", type=int, default=0, show_default=True, help="Seed of the fault draws.")
@flags.float_option(
    "--hang-seconds", 60.0, "How long a 'timeout' fault hangs; set it above the client timeout.", min=0
)
@click.option(
    "--api-key-env",
    default="COTSCOPE_SERVE_API_KEY",
    show_default=True,
    help="Environment variable holding the API key clients must send (no key required when unset).",
)
@click.option(
    "--api-key",
    default=None,
    help="The API key clients must send as a bearer token. Prefer the environment variable: a key on the "
    "command line shows in the process list.",
)
@flags.int_option("--max-n", _LIMIT_DEFAULTS.max_n)
@flags.int_option("--max-prompts", _LIMIT_DEFAULTS.max_prompts)
@flags.int_option("--max-prompt-tokens", None, "Default: the model's context length.")
@flags.int_option(
    "--max-request-tokens",
    _LIMIT_DEFAULTS.max_request_tokens,
    "Most tokens one request may ask for: prompts x n x max_tokens.",
)
@flags.int_option(
    "--max-queued-tokens",
    _LIMIT_DEFAULTS.max_queued_tokens,
    "Most tokens queued over all clients; past it requests get 429 with Retry-After.",
)
@flags.int_option("--max-body-bytes", _LIMIT_DEFAULTS.max_body_bytes)
@flags.float_option(
    "--read-timeout",
    _LIMIT_DEFAULTS.read_timeout_s,
    "Seconds a connection may take to send a whole request.",
    min=0,
    min_open=True,
)
@flags.int_option(
    "--slice-tokens",
    2**14,
    "Most tokens (rows x max_tokens) of one request decoded per round: a small request waits for one slice "
    "of a heavy one, not the whole of it. Lower: shorter waits; higher: more throughput for a lone heavy request.",
)
@flags.int_option(
    "--threads",
    None,
    "CPU threads for torch (default: torch's choice); 1 is often fastest on a CPU shared with other work.",
)
@flags.quiet_option("No request log.")
def serve(
    model_id,
    host,
    port,
    served_model_name,
    device,
    batch_size,
    faults,
    fault_seed,
    hang_seconds,
    api_key_env,
    api_key,
    max_n,
    max_prompts,
    max_prompt_tokens,
    max_request_tokens,
    max_queued_tokens,
    max_body_bytes,
    read_timeout,
    slice_tokens,
    threads,
    quiet,
) -> None:
    """Serve a model over an OpenAI-compatible /v1/completions API (the hf backend behind it)."""
    import os

    try:
        spec = FaultSpec.parse(faults)
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--inject-faults") from None
    try:
        limits = ServeLimits(
            max_body_bytes=max_body_bytes,
            max_n=max_n,
            max_prompts=max_prompts,
            max_prompt_tokens=max_prompt_tokens,
            max_request_tokens=max_request_tokens,
            max_queued_tokens=max_queued_tokens,
            read_timeout_s=read_timeout,
        )
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-queued-tokens") from None
    key = api_key or os.environ.get(api_key_env) or None
    if not key and not is_loopback(host):
        click.echo(
            f"cotscope: warning: listening on {host} without an API key: anyone who reaches this address can use the "
            f"model; set ${api_key_env} (or --host 127.0.0.1)",
            err=True,
        )
    if not quiet:  # the request log of uvicorn, on stderr
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    from resampling._hf import HFBackend

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        backend = HFBackend.from_model_id(model_id, device=device, batch_size=batch_size)
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    try:
        server = CompletionServer(
            backend,
            model_name=served_model_name,
            host=host,
            port=port,
            faults=spec,
            fault_seed=fault_seed,
            hang_s=hang_seconds,
            api_key=key,
            limits=limits,
            slice_tokens=slice_tokens,
            quiet=quiet,
        )
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--port") from None
    note = f"; injecting faults {spec} (seed {fault_seed})" if spec else ""
    auth = "; API key required" if key else ""
    click.echo(
        f"serving {server.model_name} at {server.url} (POST /v1/completions, GET /v1/models){auth}{note}",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
