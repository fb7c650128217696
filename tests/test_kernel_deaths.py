"""The server's kernel-death watch, on real Jupyter messages: which cell was running, and
one record per death however often the restarter fires."""

from __future__ import annotations

from jupyter_client.session import Session

from ambient_jupyter.server.kernel_deaths import _Watched


def _frames(session: Session, msg_type: str, content: dict, parent: str) -> list[bytes]:
    msg = session.msg(msg_type, content, parent={"msg_id": parent, "msg_type": "execute_request"})
    return session.serialize(msg)


def test_the_oldest_unfinished_cell_is_named_and_a_crash_loop_is_one_death() -> None:
    session = Session(key=b"secret")
    watched = _Watched("k", stream=None, session=Session(key=b"secret"))
    for parent, code in (("a", "x = 1"), ("b", "big = load()"), ("c", "queued()")):
        watched.on_iopub(_frames(session, "execute_input", {"code": code, "execution_count": 1}, parent))
    watched.on_iopub(_frames(session, "status", {"execution_state": "idle"}, "a"))
    assert watched.died() == "big = load()"
    # The restarter fires again for each attempt that dies before saying anything.
    assert watched.died() is None
    assert watched.died() is None
    # A kernel that came back (it spoke on IOPub) and dies again is a new death, idle this time.
    watched.on_iopub(_frames(session, "status", {"execution_state": "starting"}, ""))
    assert watched.died() == ""


def test_a_message_signed_with_another_key_is_ignored() -> None:
    watched = _Watched("k", stream=None, session=Session(key=b"secret"))
    forged = _frames(Session(key=b"other"), "execute_input", {"code": "forged()", "execution_count": 1}, "z")
    watched.on_iopub(forged)
    assert watched.died() == ""
