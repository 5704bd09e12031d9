"""Authenticated-state commands: SELECT/EXAMINE, CREATE..., LIST/LSUB, STATUS, APPEND, misc."""

from datetime import datetime, timedelta, timezone

from mailrelay.imap.mailbox import (
    capabilities,
    list_match,
    list_responses,
    select_responses,
    status_response,
)
from mailrelay.imap.proto import (
    Append,
    Create,
    Delete,
    Enable,
    GetQuota,
    GetQuotaRoot,
    Id,
    List,
    Lsub,
    Namespace,
    Rename,
    Select,
    SequenceSet,
    SessionState,
    Status,
    Subscribe,
    Tagged,
    Unsubscribe,
)
from mailrelay.imap.proto.commands import QResyncParams
from mailrelay.imap.store_api import MailboxInfo, MessageMeta, SelectResult
from mailrelay.imap.view import SelectedView

from .conftest import Link


def authed() -> Link:
    link = Link()
    link.login()
    return link


def test_select_examine_inbox_case_insensitive() -> None:
    link = authed()
    assert link.command(b"a SELECT inbox") == Select("a", "INBOX")
    assert link.command(b'a EXAMINE "Inbox/Sub"') == Select("a", "INBOX/Sub", readonly=True)
    assert link.command(b"a EXAMINE Foo").name == "EXAMINE"


def test_select_condstore_and_qresync() -> None:
    link = authed()
    assert link.command(b"a SELECT INBOX (CONDSTORE)").condstore
    cmd = link.command(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))")
    assert cmd.qresync == QResyncParams(
        67890007, 20050715194045000, SequenceSet.parse("41,43:211,214:541")
    )
    cmd = link.command(b"a SELECT INBOX (QRESYNC (1 2 1:5 (1:3 10:30)))")
    assert cmd.qresync.seq_match == (SequenceSet.parse("1:3"), SequenceSet.parse("10:30"))


def test_select_state_transitions() -> None:
    link = authed()
    link.command(b"a SELECT INBOX")
    link.core.send(Tagged("a", "OK", "ok", "READ-WRITE"))
    assert link.core.state is SessionState.SELECTED
    link.command(b"b SELECT nosuch")
    link.core.send(Tagged("b", "NO", "no such mailbox"))
    assert link.core.state is SessionState.AUTHENTICATED  # RFC 3501 §6.3.1


def test_close_and_unselect_return_to_authenticated() -> None:
    for name in (b"CLOSE", b"UNSELECT"):
        link = Link()
        link.select()
        link.command(b"c " + name)
        link.core.send(Tagged("c", "OK", "done"))
        assert link.core.state is SessionState.AUTHENTICATED


def test_create_delete_rename_subscribe() -> None:
    link = authed()
    assert link.command(b"a CREATE Archive") == Create("a", "Archive")
    assert link.command(b"a CREATE Sent (USE (\\Sent))") == Create("a", "Sent", ("\\Sent",))
    assert link.command(b"a DELETE Archive") == Delete("a", "Archive")
    assert link.command(b'a RENAME "Old" "New/Name"') == Rename("a", "Old", "New/Name")
    assert link.command(b"a SUBSCRIBE Archive") == Subscribe("a", "Archive")
    assert link.command(b"a UNSUBSCRIBE Archive") == Unsubscribe("a", "Archive")


def test_mutf7_mailbox_names_are_decoded() -> None:
    link = authed()
    assert link.command(b"a CREATE &ZeVnLIqe-").mailbox == "日本語"
    assert link.command(b"a CREATE Tom&-Jerry").mailbox == "Tom&Jerry"
    link.send(b"a CREATE &Jjo-!bad\r\n")  # valid
    link.out()
    link.send(b"b CREATE &AGEAYgBj-\r\n")  # ASCII encoded in base64 is invalid
    # a syntactically fine name no mailbox can have: NO, as Dovecot (RFC 3501 §7.1)
    assert link.out().startswith(b"b NO")


def test_list_variants() -> None:
    link = authed()
    assert link.command(b'a LIST "" *') == List("a", "", ("*",))
    assert link.command(b'a LIST "" %') == List("a", "", ("%",))
    assert link.command(b'a LIST "" ""') == List("a", "", ("",))
    assert link.command(b'a LIST "" "*" RETURN (SPECIAL-USE)').returns == ("SPECIAL-USE",)
    cmd = link.command(
        b'a LIST (SPECIAL-USE) "" ("INBOX" "Arch*") RETURN (CHILDREN STATUS (MESSAGES))'
    )
    assert cmd.selection == ("SPECIAL-USE",)
    assert cmd.patterns == ("INBOX", "Arch*")
    assert cmd.returns == ("CHILDREN", "STATUS")
    assert cmd.status_items == ("MESSAGES",)
    assert link.command(b'a LSUB "" "*"') == Lsub("a", "", "*")


def test_status_and_bad_items() -> None:
    link = authed()
    cmd = link.command(b"a STATUS INBOX (MESSAGES UIDNEXT UNSEEN HIGHESTMODSEQ SIZE APPENDLIMIT)")
    assert cmd == Status(
        "a", "INBOX", ("MESSAGES", "UIDNEXT", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "APPENDLIMIT")
    )
    link.send(b"b STATUS INBOX (BOGUS)\r\n")
    assert link.out().startswith(b"b BAD")


def test_append_with_flags_date_and_literal() -> None:
    link = authed()
    msg = b"Subject: hi\r\n\r\nbody\r\n"
    link.send(b'a APPEND Drafts (\\Draft \\seen) "05-Jan-2024 10:11:12 +0100" {%d}\r\n' % len(msg))
    assert link.out().startswith(b"+ ")
    evs = link.send(msg + b"\r\n")
    cmd = evs[0].command
    assert isinstance(cmd, Append)
    assert cmd.flags == ("\\Draft", "\\Seen")
    assert cmd.date == datetime(2024, 1, 5, 10, 11, 12, tzinfo=timezone(timedelta(hours=1)))
    assert cmd.message == msg


def test_append_literal_plus_and_binary() -> None:
    link = authed()
    cmd = link.send(b"a APPEND INBOX ~{3+}\r\na\x00b\r\n")[0].command
    assert cmd.message == b"a\x00b" and cmd.binary and cmd.flags == () and cmd.date is None


def test_append_needs_literal() -> None:
    link = authed()
    link.send(b'a APPEND INBOX "not a literal"\r\n')
    assert link.out().startswith(b"a BAD")


def test_misc_commands() -> None:
    link = authed()
    assert link.command(b"a ENABLE QRESYNC CONDSTORE") == Enable("a", ("QRESYNC", "CONDSTORE"))
    assert link.command(b'a ID ("name" "Thunderbird" "version" "115")') == Id(
        "a", (("name", "Thunderbird"), ("version", "115"))
    )
    assert link.command(b"a ID NIL") == Id("a", None)
    assert link.command(b"a NAMESPACE") == Namespace("a")
    assert link.command(b'a GETQUOTA ""') == GetQuota("a", "")
    assert link.command(b"a GETQUOTAROOT INBOX") == GetQuotaRoot("a", "INBOX")


def test_select_responses_and_list_helpers() -> None:
    result = SelectResult(
        mailbox_id=1,
        uidvalidity=42,
        uidnext=10,
        highestmodseq=77,
        messages=[MessageMeta(3, frozenset({"\\Seen"}), 5), MessageMeta(7, frozenset(), 6)],
    )
    view = SelectedView(result, condstore=True)
    lines = b"".join(r.to_bytes() for r in select_responses(result, view))
    assert b"* 2 EXISTS\r\n" in lines
    assert b"* OK [UNSEEN 2]" in lines
    assert b"* OK [UIDVALIDITY 42]" in lines
    assert b"* OK [UIDNEXT 10]" in lines
    assert b"* OK [HIGHESTMODSEQ 77]" in lines
    assert b"\\*" in lines
    st = status_response("日本語", {"MESSAGES": 2, "UNSEEN": 1}, ["UNSEEN", "MESSAGES"])
    assert st.to_bytes() == b'* STATUS "&ZeVnLIqe-" (UNSEEN 1 MESSAGES 2)\r\n'


def test_list_pattern_matching() -> None:
    assert list_match("", "*", "a/b/c")
    assert list_match("", "%", "a")
    assert not list_match("", "%", "a/b")
    assert list_match("a/", "%", "a/b")
    assert list_match("", "inbox", "INBOX")
    boxes = [
        MailboxInfo("INBOX", subscribed=True),
        MailboxInfo("Sent", frozenset({"\\Sent"})),
        MailboxInfo("Archive"),
        MailboxInfo("Archive/2023"),
    ]
    out = b"".join(r.to_bytes() for r in list_responses(boxes, "", ["*"]))
    assert b'* LIST (\\Sent \\HasNoChildren) "/" "Sent"' in out
    assert b'* LIST (\\HasChildren) "/" "Archive"' in out
    out = b"".join(r.to_bytes() for r in list_responses(boxes, "", ["*"], special_use_only=True))
    assert out.count(b"* LIST") == 1
    out = b"".join(r.to_bytes() for r in list_responses(boxes, "", [""]))
    assert out == b'* LIST (\\Noselect) "/" ""\r\n'


def test_capabilities() -> None:
    pre = capabilities(False, tls=False)
    assert "STARTTLS" in pre and "LOGINDISABLED" in pre
    post = capabilities(False, tls=True, sasl=("PLAIN", "SCRAM-SHA-256"))
    assert "AUTH=SCRAM-SHA-256" in post and "LOGINDISABLED" not in post
    assert "APPENDLIMIT=100" in capabilities(True, tls=True, appendlimit=100)
