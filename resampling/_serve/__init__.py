"""``cotscope serve``: an OpenAI-compatible ``/v1/completions`` server (FastAPI on uvicorn) over the ``hf`` backend.

For CPU users without vLLM, and as the real server the ``openai`` backend's tests talk to over loopback.
Requests are served through :meth:`resampling._hf.HFBackend.generate`, so a completion with seed ``s`` is, token
for token, what the ``hf`` backend gives for seed ``s``. One worker thread decodes in rounds: each round takes a
slice of every waiting request (a fair share, least-served first) and runs them as one ``generate`` call, which
shares the prefill of nested prefixes and decodes the rows in one batch; so a small request is not stuck behind a
heavy one, and a request whose client disconnects is cancelled. Seeds do not depend on the batch, so batching and
slicing never change a result. Waiting requests hold no thread: the event loop awaits the worker's future.

Request fields follow vLLM's ``CompletionRequest``:

- ``prompt``: a string, a list of token ids, or a list of either (one choice block per prompt).
- ``n`` and ``seed``: sample ``k`` of every prompt uses seed ``seed + k`` (vLLM's convention); no seed draws one.
- ``max_tokens`` (required), ``temperature``, ``top_p``, ``top_k`` (0 or -1: off), ``stop``.
- ``return_token_ids``: each choice also carries ``token_ids`` (generated ids, without the end-of-sequence token)
  and ``prompt_token_ids``.
- ``add_special_tokens`` (string prompts; default true, as in vLLM).

Fields that would change the output in ways this server does not implement (``logprobs``, ``echo``, ``stream``,
penalties, ``min_p`` > 0, ``logit_bias``, ...) are refused with a 400 rather than silently ignored, and so is any
field the server does not know (a misspelt ``temprature`` must not sample at temperature 1).

Admission (:class:`ServeLimits`): the body size is checked from ``Content-Length`` before the body is read (413),
``n``, the number of prompts, prompt length and ``prompts x n x max_tokens`` before any work (400 naming the limit),
and the work queued across all clients is bounded (429 with ``Retry-After``). A connection that has not sent a whole
request within ``read_timeout_s`` is closed.

Fault injection (:class:`FaultSpec`) makes the server answer a seeded random share of requests with an HTTP error,
a hang, a truncated body, or a response with a missing choice, so clients' retry logic can be tested for real.

Where each part lives:

- ``_app``: the HTTP layer (FastAPI routes, the body read within its size limit, uvicorn's protocol with the read
  deadline);
- ``_requests``: request validation and the admission limits (:class:`ServeLimits`);
- ``_scheduler``: the worker thread that owns the model and decodes requests in rounds, a fair share each;
- ``_faults``: fault injection (:class:`FaultSpec`, :data:`FAULT_KINDS`);
- ``_server``: :class:`CompletionServer` (lifecycle and the request pipeline) and :func:`start_server`;
- ``_command``: the ``cotscope serve`` click command and its options;
- ``_loadbench``: small-request latency beside heavy and abandoned requests (``python -m resampling._serve._loadbench``).
"""

from resampling._serve._command import serve
from resampling._serve._faults import FAULT_KINDS, FaultSpec
from resampling._serve._requests import ServeLimits
from resampling._serve._server import CompletionServer, start_server

__all__ = ["FAULT_KINDS", "CompletionServer", "FaultSpec", "ServeLimits", "serve", "start_server"]
