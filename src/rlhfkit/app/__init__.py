"""The labelling web page (FastAPI + Jinja2 + vanilla JS) and helpers to serve it.

- :func:`create_app` — the ASGI app over a :class:`~rlhfkit.feedback.store.Store`.
- :func:`start_server` — uvicorn in a background thread.
- :func:`start_human_teacher` — store + server + :class:`~rlhfkit.feedback.human.HumanTeacher`,
  ready for :func:`rlhfkit.control.train` (what ``rlhf control train --teacher human`` uses).
"""

from rlhfkit.app.server import ServerHandle, check_bind, is_loopback, start_human_teacher, start_server
from rlhfkit.app.web import DEFAULT_GUIDELINES, MAX_BODY_BYTES, create_app

__all__ = ["DEFAULT_GUIDELINES", "MAX_BODY_BYTES", "ServerHandle", "check_bind", "create_app", "is_loopback",
           "start_human_teacher", "start_server"]
