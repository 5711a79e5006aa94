"""The transport's header parser (issue 19: the email parser was a quarter of urllib3's own work per
request) gives exactly what http.client's ``parse_headers`` gives — the same (name, value) pairs in the
same order, the same defects and left-over text urllib3 checks, the same errors at the same limits —
for any header block, and the faster path is the one taken for a registry's plain replies."""

from __future__ import annotations

import http.client
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.registry import transport

PLAIN = (b"Content-Length: 1234\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n"
         b"Docker-Content-Digest: sha256:" + b"a" * 64 + b"\r\nX-Empty:\r\nX-Spaces:  \t v \r\n\r\nbody")


def both(block: bytes) -> tuple[object, object]:
    out = []
    for parse in (http.client.parse_headers, transport._parse_headers):
        fp = io.BytesIO(block)
        try:
            msg = parse(fp)
        except Exception as exc:  # the same failure is the point
            out.append((type(exc), str(exc)))
            continue
        out.append((msg.items(), [type(d) for d in msg.defects], msg.get_payload() or "", fp.read()))
    return out[0], out[1]


@pytest.mark.parametrize("block", [
    PLAIN,
    b"A: 1\r\n continued\r\n\r\n",  # obs-fold
    b": empty name\r\n\r\n",
    b"From me\r\nA: 1\r\n\r\n",
    b"A: x\x85y\r\n\r\n",  # a Latin-1 NEL that str.splitlines breaks at
    b"A: x\ry\r\n\r\n",
    b"A: x\x0cy\r\nB: 2\r\n\r\n",
    b"no colon\r\nA: 1\r\n\r\n",
    b"A: 1\nB: 2\n\n",
    b"A: 1\r\nA: 2\r\n\r\n",  # duplicates kept in order
    b"Caf\xe9: 1\r\n\r\n",
    b"A: \xff\xfe\r\n\r\n",
    b"A: " + b"x" * 70000 + b"\r\n\r\n",  # over the line limit
    b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n",  # over the header count
    b"".join(b"H%d: v\r\n" % i for i in range(100)) + b"\r\n",
    b"",
])
def test_the_same_message_as_http_client(block: bytes) -> None:
    expected, got = both(block)
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\r\n"), max_size=8))
def test_any_header_block_parses_as_http_client_parses_it(lines: list[bytes]) -> None:
    expected, got = both(b"".join(lines) + b"\r\n")
    assert got == expected


def test_a_registrys_plain_reply_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import email.parser

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the email parser was used for a plain header block")

    monkeypatch.setattr(email.parser.Parser, "parsestr", refuse)
    msg = transport._parse_headers(io.BytesIO(PLAIN))
    assert msg["docker-content-digest"] == "sha256:" + "a" * 64 and msg["x-spaces"] == "v \r".rstrip("\r")
    assert transport._DeadlineResponse.begin.__globals__["parse_headers"] is transport._parse_headers
