"""A DHCPv4 client that lies: sends requests with any client hardware address (``chaddr``),
client identifier or host name, as a container's root can, from an interface of the network
namespace it runs in (run it there with ``nsenter --net=...``).

``python -m tests.integration.dhcp_forge IFACE`` reads a JSON list of requests on stdin, each
``{"chaddr": mac, "type": "discover"|"release", "ciaddr": ip, "server": ip, "clientid": hex,
"hostname": text}`` (all but ``chaddr`` optional), sends them in order from IFACE (a discover
asks for rapid commit, so an answer is a lease) and prints a JSON object ``{chaddr: address}``
of the answers it got. Frames leave with the interface's own source MAC: only what is inside
the DHCP message is forged.

``python -m tests.integration.dhcp_forge IFACE ra PREFIX`` sends IPv6 router advertisements
offering ``PREFIX`` (a /64) instead, as a rogue router would; ``IFACE offer SERVER`` sends
rogue DHCP offers from the address SERVER; ``IFACE listen SERVER SECONDS`` prints how many DHCP
server messages from SERVER arrived.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import sys
import time

TYPES = {"discover": 1, "release": 7}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def frame(src_mac: bytes, request: dict[str, str], xid: int) -> bytes:
    """One broadcast Ethernet frame carrying the DHCP message ``request`` describes."""
    ciaddr = socket.inet_aton(request.get("ciaddr", "0.0.0.0"))
    chaddr = _mac(request["chaddr"])
    bootp = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0x8000, ciaddr,
                        b"\0" * 4, b"\0" * 4, b"\0" * 4)
    bootp += chaddr.ljust(16, b"\0") + b"\0" * 192 + b"\x63\x82\x53\x63"
    kind = TYPES[request.get("type", "discover")]
    opts = bytes([53, 1, kind])
    if kind == 1:
        opts += bytes([80, 0])  # rapid commit: the answer is the lease itself
    if "server" in request:
        opts += bytes([54, 4]) + socket.inet_aton(request["server"])
    if "clientid" in request:
        cid = bytes.fromhex(request["clientid"])
        opts += bytes([61, len(cid)]) + cid
    if "hostname" in request:
        name = request["hostname"].encode()[:255]
        opts += bytes([12, len(name)]) + name
    payload = bootp + opts + b"\xff"
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    src_ip = ciaddr if kind == 7 else b"\0" * 4
    dst_ip = b"\xff" * 4
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\xff" * 6 + src_mac + b"\x08\x00" + ip + udp


def send_all(iface: str, requests: list[dict[str, str]], wait: float = 1.0) -> dict[str, str]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sock.bind((iface, 0))
    sock.settimeout(0.05)
    src = sock.getsockname()[4]  # the interface's MAC (not /sys: nsenter --net keeps ours)
    answers: dict[str, str] = {}
    for request in requests:
        xid = random.getrandbits(32)
        sock.send(frame(src, request, xid))
        if request.get("type", "discover") != "discover":
            continue
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            bootp = data[42:]
            if len(bootp) >= 240 and bootp[0] == 2 and \
                    struct.unpack("!I", bootp[4:8])[0] == xid:
                answers[request["chaddr"]] = socket.inet_ntoa(bootp[16:20])
                break
    return answers




def router_advert(src_mac: bytes, prefix: str) -> bytes:
    """An IPv6 router advertisement to all nodes, from the link-local address of ``src_mac``,
    offering ``prefix`` (a /64) for SLAAC: what a rogue router in a container sends."""
    iid = bytes([src_mac[0] ^ 0x02]) + src_mac[1:3] + b"\xff\xfe" + src_mac[3:6]
    src = b"\xfe\x80" + b"\0" * 6 + iid
    dst = socket.inet_pton(socket.AF_INET6, "ff02::1")
    pinfo = struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0,
                        socket.inet_pton(socket.AF_INET6, prefix))
    slla = bytes([1, 1]) + src_mac
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + pinfo + slla
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + src + dst
    return b"\x33\x33\x00\x00\x00\x01" + src_mac + b"\x86\xdd" + ip6 + body


def send_router_adverts(iface: str, prefix: str, count: int = 3) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
    sock.bind((iface, 0))
    frame_ = router_advert(sock.getsockname()[4], prefix)
    for _ in range(count):
        sock.send(frame_)
        time.sleep(0.2)


def server_offer(src_mac: bytes, server: str, router: str) -> bytes:
    """A broadcast DHCPOFFER from ``server`` (port 67 to 68) naming ``router`` as the gateway,
    for any client (chaddr all zeros, as a flood of rogue offers would not know it)."""
    bootp = struct.pack("!BBBBIHH4s4s4s4s", 2, 1, 6, 0, random.getrandbits(32), 0, 0x8000,
                        b"\0" * 4, socket.inet_aton(router), socket.inet_aton(server), b"\0" * 4)
    bootp += b"\0" * 16 + b"\0" * 192 + b"\x63\x82\x53\x63"
    opts = bytes([53, 1, 2, 54, 4]) + socket.inet_aton(server) + \
        bytes([3, 4]) + socket.inet_aton(router) + bytes([51, 4]) + struct.pack("!I", 3600)
    payload = bootp + opts + b"\xff"
    udp = struct.pack("!HHHH", 67, 68, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(server), b"\xff" * 4)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\xff" * 6 + src_mac + b"\x08\x00" + ip + udp


def send_offers(iface: str, server: str, count: int = 5) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sock.bind((iface, 0))
    offer = server_offer(sock.getsockname()[4], server, server)
    for _ in range(count):
        sock.send(offer)
        time.sleep(0.2)


def count_from_server(iface: str, server: str, seconds: float) -> int:
    """How many DHCP server messages (UDP from port 67) from ``server`` arrive at ``iface``
    within ``seconds``."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sock.bind((iface, 0))
    sock.settimeout(0.1)
    want = socket.inet_aton(server)
    seen = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        if len(data) >= 42 and data[23] == 17 and data[26:30] == want and \
                struct.unpack("!H", data[34:36])[0] == 67:
            seen += 1
    return seen


if __name__ == "__main__":
    if sys.argv[2:3] == ["ra"]:
        send_router_adverts(sys.argv[1], sys.argv[3])
    elif sys.argv[2:3] == ["offer"]:
        send_offers(sys.argv[1], sys.argv[3])
    elif sys.argv[2:3] == ["listen"]:
        print(count_from_server(sys.argv[1], sys.argv[3], float(sys.argv[4])))
    else:
        print(json.dumps(send_all(sys.argv[1], json.loads(sys.stdin.read()))))
