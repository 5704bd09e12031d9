"""Sans-IO IMAP4rev1 server core (RFC 3501, IDLE, UIDPLUS, MOVE, LITERAL+, CONDSTORE...).

Wire it to a transport like this (no sockets or clocks in here)::

    core = ImapServerCore()
    core.send(UntaggedStatus("OK", "ready", code="CAPABILITY IMAP4rev1 ..."))
    write(core.data_to_send())
    async for data in read():
        core.receive_data(data)
        while (ev := core.next_event()) is not NEED_DATA:
            if isinstance(ev, CommandReceived):
                ...                        # await the store, then
                core.send(Tagged(ev.command.tag, "OK", "done"))
            elif isinstance(ev, ConnectionClosed):
                ...
        write(core.data_to_send())
"""

from . import commands
from .commands import *  # noqa: F403
from .connection import (
    DEFAULT_LIMITS,
    NEED_DATA,
    AuthResponse,
    CommandReceived,
    CommandRejected,
    ConnectionClosed,
    Event,
    IdleDone,
    ImapServerCore,
    InputPending,
)
from .errors import ParseError
from .mutf7 import decode_mutf7, encode_mutf7
from .parser import parse_command
from .reader import Limits
from .response import (
    Atom,
    Bye,
    Continuation,
    Response,
    Tagged,
    Untagged,
    UntaggedStatus,
    fmt,
    mailbox_name,
)
from .seqset import SequenceSet
from .spool import Spool
from .state import SessionState

__all__ = [
    *commands.__all__,
    "DEFAULT_LIMITS",
    "NEED_DATA",
    "Atom",
    "AuthResponse",
    "Bye",
    "CommandReceived",
    "CommandRejected",
    "ConnectionClosed",
    "Continuation",
    "Event",
    "IdleDone",
    "ImapServerCore",
    "InputPending",
    "Limits",
    "ParseError",
    "Response",
    "SequenceSet",
    "SessionState",
    "Spool",
    "Tagged",
    "Untagged",
    "UntaggedStatus",
    "decode_mutf7",
    "encode_mutf7",
    "fmt",
    "mailbox_name",
    "parse_command",
]
