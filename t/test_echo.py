"""WebSocket echo behaviour (websockets client and raw frames)."""

import asyncio
import os
import struct

import pytest
import websockets

from conftest import (OP_BIN, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                      RawWS, close_payload, encode_frame, run_async,
                      ws_connect)


def test_text_echo(server):
    msgs = ["hello", "h\u00e9llo \u2713 \U0001d11e", "a" * 125, "b" * 126,
            "c" * 65535, "d" * 65536, "e" * 70000]

    async def go():
        async with ws_connect(server.port) as ws:
            for m in msgs:
                await ws.send(m)
                got = await ws.recv()
                assert isinstance(got, str)
                assert got == m
    run_async(go())


def test_binary_echo(server):
    msgs = [bytes(range(256)), b"\x00", b"\xff" * 126, os.urandom(65536),
            os.urandom(100000)]

    async def go():
        async with ws_connect(server.port, path="/echo") as ws:
            for m in msgs:
                await ws.send(m)
                got = await ws.recv()
                assert isinstance(got, bytes)
                assert got == m
    run_async(go())


def test_empty_messages(server):
    async def go():
        async with ws_connect(server.port) as ws:
            await ws.send("")
            got = await ws.recv()
            assert got == "" and isinstance(got, str)
            await ws.send(b"")
            got = await ws.recv()
            assert got == b"" and isinstance(got, bytes)
    run_async(go())


def test_one_mebibyte_messages(server):
    blob = os.urandom(1 << 20)
    text = ("0123456789abcdef" * (1 << 16))
    assert len(text) == 1 << 20

    async def go():
        async with ws_connect(server.port) as ws:
            await ws.send(blob)
            got = await ws.recv()
            assert isinstance(got, bytes) and len(got) == len(blob)
            assert got == blob
            await ws.send(text)
            got = await ws.recv()
            assert got == text
    run_async(go(), timeout=30)


def test_fragmented_messages_echoed_as_one(server):
    async def go():
        async with ws_connect(server.port) as ws:
            await ws.send(["frag", "men", "ted \u2713", ""])
            got = await ws.recv()
            assert got == "fragmented \u2713"
            parts = [os.urandom(1000), os.urandom(1), os.urandom(70000)]
            await ws.send(parts)
            got = await ws.recv()
            assert got == b"".join(parts)
    run_async(go())


def test_fragmented_raw_single_message_frames(server):
    """The echo of a fragmented message is one message (not one per fragment)."""
    ws = RawWS(server.port)
    ws.send_frame(OP_BIN, b"\x01\x02", fin=False)
    ws.send_frame(OP_CONT, b"\x03", fin=False)
    ws.send_frame(OP_CONT, b"\x04\x05", fin=True)
    ws.send_frame(OP_TEXT, b"after")
    op, data = ws.recv_message()
    assert (op, data) == (OP_BIN, b"\x01\x02\x03\x04\x05")
    op, data = ws.recv_message()
    assert (op, data) == (OP_TEXT, b"after")
    assert ws.close() == 1000


def test_ping_between_fragments(server):
    ws = RawWS(server.port)
    ws.send_frame(OP_TEXT, b"Hel", fin=False)
    ws.send_frame(OP_PING, b"p1")
    ws.send_frame(OP_CONT, b"lo ", fin=False)
    ws.send_frame(OP_CONT, b"World", fin=True)
    fin, op, payload = ws.recv_frame()
    assert (fin, op, payload) == (True, OP_PONG, b"p1")
    op, data = ws.recv_message()
    assert (op, data) == (OP_TEXT, b"Hello World")
    assert ws.close() == 1000


@pytest.mark.parametrize("payload", [b"abc123", b"", bytes(range(125))],
                         ids=["short", "empty", "125-bytes"])
def test_ping_gets_pong_with_same_payload(server, payload):
    ws = RawWS(server.port)
    ws.send_frame(OP_PING, payload)
    fin, op, got = ws.recv_frame()
    assert fin and op == OP_PONG
    assert got == payload
    assert ws.echo("after ping") == b"after ping"
    assert ws.close() == 1000


def test_ping_via_websockets_client(server):
    async def go():
        async with ws_connect(server.port) as ws:
            waiter = await ws.ping(b"xyz")
            await asyncio.wait_for(waiter, 3)
            await ws.send("x")
            assert await ws.recv() == "x"
    run_async(go())


def test_unsolicited_pong_is_ignored(server):
    ws = RawWS(server.port)
    ws.send_frame(OP_PONG, b"nobody asked")
    assert ws.echo("still fine") == b"still fine"
    assert ws.close() == 1000


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4000, 4999])
def test_close_code_echoed_websockets(server, code):
    async def go():
        ws = await ws_connect(server.port)
        await ws.send("before close")
        assert await ws.recv() == "before close"
        await ws.close(code=code, reason="bye")
        return ws.close_code
    assert run_async(go()) == code


@pytest.mark.parametrize("code", [1000, 3000, 4999])
def test_close_code_echoed_raw_then_tcp_closed(server, code):
    ws = RawWS(server.port)
    ws.send_frame(OP_CLOSE, close_payload(code, b"reason text"))
    got, _reason, msgs = ws.recv_close()
    assert got == code
    assert msgs == []
    # after the close handshake the server closes the TCP connection
    assert ws.wait_eof(5.0), "server kept the TCP connection open"
    ws.abort()


def test_messages_before_close_are_echoed_before_close_reply(server):
    ws = RawWS(server.port)
    ws.sock.sendall(b"".join([
        encode_frame(OP_TEXT, b"one"),
        encode_frame(OP_BIN, b"two"),
        encode_frame(OP_CLOSE, close_payload(3001)),
    ]))
    code, _reason, msgs = ws.recv_close()
    assert msgs == [(OP_TEXT, b"one"), (OP_BIN, b"two")]
    assert code == 3001
    ws.abort()


def test_many_messages_in_order_and_concurrent_clients(server_factory):
    srv = server_factory(workers=2)

    async def client(i):
        async with ws_connect(srv.port) as ws:
            for j in range(50):
                await ws.send(f"{i}:{j}")
            for j in range(50):
                assert await ws.recv() == f"{i}:{j}"
            return i
    async def go():
        return await asyncio.gather(*(client(i) for i in range(20)))
    assert sorted(run_async(go(), timeout=30)) == list(range(20))


def test_default_websockets_client_with_compression_offer(server):
    """The stock client offers permessage-deflate; the server must not
    accept an extension it does not implement, and echo must still work."""
    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/",
                                      open_timeout=5, close_timeout=5) as ws:
            assert ws.extensions == []
            await ws.send("compressible " * 100)
            assert await ws.recv() == "compressible " * 100
    run_async(go())


# ---------------------------------------------------------------- 1009

def test_1009_for_oversize_message(server_factory):
    srv = server_factory(workers=1, max_message_size="1k")

    async def go():
        async with ws_connect(srv.port) as ws:
            exact = "x" * 1024
            await ws.send(exact)
            assert await ws.recv() == exact
            await ws.send("y" * 2048)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as ei:
                await ws.recv()
            assert ei.value.rcvd is not None, "no close frame received"
            return ei.value.rcvd.code
    assert run_async(go()) == 1009


def test_1009_for_oversize_fragmented_message(server_factory):
    srv = server_factory(workers=1, max_message_size="1k")
    ws = RawWS(srv.port)
    ws.send_frame(OP_BIN, b"a" * 600, fin=False)
    ws.send_frame(OP_CONT, b"b" * 600, fin=True)
    code, _reason, msgs = ws.recv_close()
    assert msgs == []
    assert code == 1009
    ws.abort()


def test_1009_raw_single_frame(server_factory):
    srv = server_factory(workers=1, max_message_size="1k")
    ws = RawWS(srv.port)
    ws.send_frame(OP_TEXT, b"z" * 1025)
    code, _reason, msgs = ws.recv_close()
    assert msgs == []
    assert code == 1009
    ws.abort()
    # the server stays healthy
    ws2 = RawWS(srv.port)
    assert ws2.echo("ok") == b"ok"
    ws2.close()


def test_close_frame_payload_format(server):
    """The server's close reply is a well-formed close payload."""
    ws = RawWS(server.port)
    ws.send_frame(OP_CLOSE, close_payload(4321))
    fin, op, payload = ws.recv_frame()
    assert fin and op == OP_CLOSE
    assert len(payload) >= 2
    assert struct.unpack("!H", payload[:2])[0] == 4321
    payload[2:].decode("utf-8")  # reason, if any, is valid UTF-8
    ws.abort()


def test_backpressure_client_not_reading(server_factory):
    """A client that sends much more than it reads: the server must neither
    lose nor reorder data, nor drop the client; its sender stalls until the
    client reads (max_pending_output)."""
    srv = server_factory(workers=1, max_pending_output="64k")
    msgs = [os.urandom(64 * 1024) for _ in range(256)]   # 16 MiB

    async def go():
        async with ws_connect(srv.port, max_queue=1) as ws:
            async def sender():
                for m in msgs:
                    await ws.send(m)
            task = asyncio.create_task(sender())
            await asyncio.sleep(0.5)
            stalled = not task.done()
            got = []
            for _ in msgs:
                got.append(await ws.recv())
            await task
            assert len(got) == len(msgs)
            assert got == msgs, "echo data lost or reordered"
            return stalled
    assert run_async(go(), timeout=60), "16 MiB went through without the client reading"
