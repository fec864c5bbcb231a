"""What an API client may send to the demo's ``run`` endpoint, checked before it is used.

The page sends well-formed requests; a script calling ``/gradio_api/run/run`` (or
``gradio_client``) may not. Gradio's own checks fail with errors that reach the client
empty (``show_error`` is off so server details stay private) and print a full traceback.
:func:`demo_blocks` returns a ``gradio.Blocks`` subclass that checks the ``run`` request
first and turns every refusal into a ``gradio.Error`` whose text reaches the client,
logged as one warning line.

Only files uploaded to this server are accepted as the image: a path on the server or a
URL is refused before Gradio would copy or download it (Gradio skips that check when an
app is mounted into FastAPI rather than launched).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The ``run`` endpoint's inputs, in order.
RUN_INPUTS = ("image", "classes", "tagging", "detect_tags", "segment", "classify", "clip_mode",
              "box_threshold", "text_threshold")
#: the inputs of the Video tab's ``track`` endpoint, in order.
TRACK_INPUTS = ("video", "classes")
#: endpoint -> its inputs; the first input of each is an uploaded file.
ENDPOINT_INPUTS = {"run": RUN_INPUTS, "track": TRACK_INPUTS}

_UPLOAD_HOWTO = ("upload the file first (POST /gradio_api/upload) and pass "
                 '{"path": <the path it returns>, "meta": {"_type": "gradio.FileData"}}')


class RequestError(ValueError):
    """A request whose form is wrong (not its content); the message is for the client."""


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_upload(value: Any, upload_folder: str | Path) -> tuple[str | None, str | None]:
    """The server path and the user's file name of an image input.

    Args:
        value: what the client sent: ``None`` or Gradio's file record (a dict with ``path``).
        upload_folder: the folder Gradio stores uploads in.

    Raises:
        RequestError: not a file record, or a file that was not uploaded to this server.

    Example:
        >>> check_upload(None, "/tmp/gradio")
        (None, None)
    """
    if value is None:
        return None, None
    if not isinstance(value, dict) or not isinstance(value.get("path"), str) or not value["path"]:
        raise RequestError(f"The image must be null or a file record; got {_shown(value)}. To send "
                           f"an image, {_UPLOAD_HOWTO}.")
    path = value["path"]
    if "://" in path:
        raise RequestError(f"The image {_shown(path)} is a URL; this demo fetches nothing. "
                           f"Instead, {_UPLOAD_HOWTO}.")
    try:
        resolved = Path(path).resolve()
        inside = resolved.is_relative_to(Path(upload_folder).resolve()) and resolved.is_file()
    except (OSError, ValueError):
        inside = False
    if not inside:
        raise RequestError(f"The image {_shown(path)} was not uploaded to this server; only "
                           f"uploads are read. To send an image, {_UPLOAD_HOWTO}.")
    name = value.get("orig_name")
    return path, name if isinstance(name, str) and name else Path(path).name


def flag(value: Any, name: str, default: bool) -> bool:
    """A switch: ``true``/``false`` (``null``: the default).

    Raises:
        RequestError: anything else (a string ``"false"`` would otherwise read as true).

    Example:
        >>> flag(None, "segment", True)
        True
    """
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false; got {_shown(value)}.")
    return value


def number(value: Any, name: str) -> float | None:
    """A threshold: a number in [0, 1], or ``null``.

    Raises:
        RequestError: not a number, or outside [0, 1].

    Example:
        >>> number(0.4, "box_threshold")
        0.4
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise RequestError(f"{name} must be a number from 0 to 1; got {_shown(value)}.")
    return float(value)


def text(value: Any, name: str) -> str:
    """A text input (``null``: empty).

    Raises:
        RequestError: not a string.

    Example:
        >>> text(None, "classes")
        ''
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string; got {_shown(value)}.")
    return value


def refuse(gr: Any, message: str, detail: str = "") -> Exception:
    """Log a refused request as one warning line; the ``gradio.Error`` to raise for it.

    Args:
        gr: the ``gradio`` module.
        message: what the client is told.
        detail: what only the log gets (it may name server paths).

    Example:
        >>> raise refuse(gradio, "tagging must be true or false; got 'no'.")  # doctest: +SKIP
    """
    first_line = detail.strip().splitlines()[0] if detail.strip() else ""
    logger.warning("refused a demo API request: %s%s", message,
                   f" [{first_line}]" if first_line else "")
    return gr.Error(message, print_exception=False)


def demo_blocks(gr: Any) -> type:
    """A ``gradio.Blocks`` subclass whose ``run`` requests are checked before Gradio's own
    preprocessing, and whose input errors reach the client as messages.

    Example:
        >>> with demo_blocks(gradio)(title="demo") as app:  # doctest: +SKIP
        ...     ...
    """

    class DemoBlocks(gr.Blocks):
        async def preprocess_data(self, block_fn: Any, inputs: list[Any], state: Any,
                                  explicit_call: bool = False) -> Any:
            from gradio.utils import get_upload_folder

            try:
                names = ENDPOINT_INPUTS.get(block_fn.api_name)
                if names is not None:
                    if len(inputs) != len(names):
                        raise RequestError(f"{block_fn.api_name} takes {len(names)} inputs "
                                           f"({', '.join(names)}); got {len(inputs)}.")
                    check_upload(inputs[0], get_upload_folder())
                return await super().preprocess_data(block_fn, inputs, state, explicit_call)
            except gr.Error:
                raise
            except RequestError as error:
                raise refuse(gr, str(error)) from None
            except (ValueError, TypeError) as error:
                # Gradio's refusals (a path outside its cache, a malformed file record) may
                # name server folders: the client gets the gist, the log one line
                message = f"The request's inputs were refused ({type(error).__name__})."
                if block_fn.api_name in ENDPOINT_INPUTS:
                    what = "a video" if block_fn.api_name == "track" else "an image"
                    message += f" To send {what}, {_UPLOAD_HOWTO}."
                raise refuse(gr, message, detail=f"{type(error).__name__}: {error}") from None

    return DemoBlocks
