"""One AF_PACKET socket for every tap, with a classic BPF filter.

* ETH_P_ALL on no interface in particular: the socket sees every interface
  of the namespace, so a tap needs no socket of its own (10k taps, one fd);
  the receiving interface comes with each frame (sll_ifindex).
* The filter (SO_ATTACH_FILTER) runs in the kernel before anything is
  queued to us: only IPv4 UDP to port 67 (no fragments), ICMPv6 router
  solicitations and IPv6 UDP to port 547 get through; forwarded VM traffic,
  BGP, BFD... never reach user space.
* PACKET_IGNORE_OUTGOING (Linux 4.20): without it the kernel clones every
  packet *sent* by any interface of the host for us before the filter runs
  (dev_queue_xmit_nit), a cost on the forwarding path. The filter also
  drops PACKET_OUTGOING, for older kernels.
* recvfrom/sendto through libc: Python's socket module turns sll_ifindex
  into a name (an ioctl per packet) and wants a name to send; we want the
  index both ways, without the lookup, and without a name that a re-created
  tap may have taken over in between.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20

# Classic BPF opcodes (linux/filter.h)
LD, LDX, JMP, RET = 0x00, 0x01, 0x05, 0x06
W, H, B = 0x00, 0x08, 0x10
ABS, IND, MSH = 0x20, 0x40, 0xA0
JEQ, JSET = 0x10, 0x40
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE
ACCEPT_LEN = 0x40000


def assemble(program: list[tuple[object, ...]]) -> list[tuple[int, int, int, int]]:
    """(code, k) / (code, k, jt_label, jf_label) / ("label", name) ->
    sock_filter tuples with relative jump offsets."""
    labels: dict[str, int] = {}
    pc = 0
    for ins in program:
        if ins[0] == "label":
            labels[str(ins[1])] = pc
        else:
            pc += 1
    out: list[tuple[int, int, int, int]] = []
    for ins in program:
        if ins[0] == "label":
            continue
        code, k = int(ins[0]), int(ins[1])  # type: ignore[call-overload]
        jt = jf = 0
        if len(ins) == 4:
            here = len(out) + 1
            jt = labels[str(ins[2])] - here if ins[2] else 0
            jf = labels[str(ins[3])] - here if ins[3] else 0
            assert 0 <= jt < 256 and 0 <= jf < 256
        out.append((code, jt, jf, k))
    return out


def responder_filter() -> list[tuple[int, int, int, int]]:
    """The kernel-side filter: IPv4 UDP dport 67, ICMPv6 type 133, IPv6 UDP
    dport 547; nothing we sent ourselves. IPv6 extension headers are not
    walked: neither a router solicitation nor a DHCPv6 message has any."""
    return assemble([
        (LD | W | ABS, SKF_AD_PKTTYPE),
        (JMP | JEQ, PACKET_OUTGOING, "drop", None),
        (LD | H | ABS, 12),  # ethertype
        (JMP | JEQ, 0x0800, None, "not4"),
        (LD | B | ABS, 23),  # IPv4 protocol
        (JMP | JEQ, 17, None, "drop"),
        (LD | H | ABS, 20),  # flags + fragment offset
        (JMP | JSET, 0x1FFF, "drop", None),
        (LDX | B | MSH, 14),  # X = IPv4 header length
        (LD | H | IND, 16),  # UDP destination port
        (JMP | JEQ, 67, "accept", "drop"),
        ("label", "not4"),
        (JMP | JEQ, 0x86DD, None, "drop"),
        (LD | B | ABS, 20),  # IPv6 next header
        (JMP | JEQ, 58, None, "not_icmp6"),
        (LD | B | ABS, 54),  # ICMPv6 type
        (JMP | JEQ, 133, "accept", "drop"),
        ("label", "not_icmp6"),
        (JMP | JEQ, 17, None, "drop"),
        (LD | H | ABS, 56),  # UDP destination port
        (JMP | JEQ, 547, "accept", "drop"),
        ("label", "accept"),
        (RET, ACCEPT_LEN),
        ("label", "drop"),
        (RET, 0),
    ])


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class _SockaddrLL(ctypes.Structure):
    _fields_ = [
        ("sll_family", ctypes.c_ushort),
        ("sll_protocol", ctypes.c_ushort),
        ("sll_ifindex", ctypes.c_int),
        ("sll_hatype", ctypes.c_ushort),
        ("sll_pkttype", ctypes.c_ubyte),
        ("sll_halen", ctypes.c_ubyte),
        ("sll_addr", ctypes.c_ubyte * 8),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_recvfrom = _libc.recvfrom
_recvfrom.restype = ctypes.c_ssize_t
_recvfrom.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_sendto = _libc.sendto
_sendto.restype = ctypes.c_ssize_t
_sendto.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
_bind = _libc.bind
_bind.restype = ctypes.c_int
_bind.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]


class PacketSocket:
    """Non-blocking; recv() returns None when nothing is queued."""

    BUFSIZE = 65536

    def __init__(self, rcvbuf: int = 8 << 20) -> None:
        # Protocol 0: the socket receives nothing until bound below, after
        # the filter is in place (created with ETH_P_ALL it would queue
        # every frame of the host in between).
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            attach_filter(self.sock, responder_filter())
            try:
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass  # kernel < 4.20: the filter drops our own frames instead
            # A boot storm queues a frame per client at once (~2.3 KB of
            # kernel memory each); the default 208 KB holds ~90 of them.
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.setblocking(False)
            where = _SockaddrLL()
            where.sll_family = socket.AF_PACKET
            where.sll_protocol = socket.htons(ETH_P_ALL)
            where.sll_ifindex = 0  # every interface
            if _bind(self.sock.fileno(), ctypes.byref(where), ctypes.sizeof(where)) < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        except BaseException:
            self.sock.close()
            raise
        self.fd = self.sock.fileno()
        self._buf = ctypes.create_string_buffer(self.BUFSIZE)
        self._addr = _SockaddrLL()
        self._addrlen = ctypes.c_uint(ctypes.sizeof(_SockaddrLL))
        self._out = _SockaddrLL()
        self._out.sll_family = socket.AF_PACKET
        self._out.sll_halen = 6
        self.kernel_packets = 0
        self.kernel_drops = 0

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        self.sock.close()

    def recv(self) -> tuple[int, bytes] | None:
        """-> (ifindex, frame). A frame longer than our buffer comes back cut
        (and fails to parse): MSG_TRUNC reports its real length."""
        self._addrlen.value = ctypes.sizeof(_SockaddrLL)
        n = _recvfrom(self.fd, self._buf, self.BUFSIZE, MSG_DONTWAIT | MSG_TRUNC,
                      ctypes.byref(self._addr), ctypes.byref(self._addrlen))
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return None
            raise OSError(err, os.strerror(err))
        return self._addr.sll_ifindex, self._buf.raw[: min(n, self.BUFSIZE)]

    def send(self, ifindex: int, frame: bytes) -> None:
        out = self._out
        out.sll_ifindex = ifindex
        out.sll_protocol = socket.htons(int.from_bytes(frame[12:14], "big"))
        n = _sendto(self.fd, frame, len(frame), MSG_DONTWAIT, ctypes.byref(out), ctypes.sizeof(out))
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def update_kernel_stats(self) -> tuple[int, int]:
        """Frames the filter passed, and those dropped for want of buffer
        space, since the socket was opened (the kernel resets on read)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        self.kernel_packets += packets
        self.kernel_drops += drops
        return self.kernel_packets, self.kernel_drops


def open_port_sink(port: int = 67) -> socket.socket | None:
    """A UDP socket on `port` that drops everything it gets (filter: ret 0).

    A renewing DHCP client unicasts to the gateway address, which is local
    on the tap: with no socket on port 67 the kernel would answer every
    renewal with an ICMP port unreachable (our reply comes from the packet
    socket either way). None if the port is taken (e.g. a dnsmasq)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        attach_filter(s, assemble([(RET, 0)]))
        s.bind(("0.0.0.0", port))
    except OSError:
        s.close()
        return None
    return s
