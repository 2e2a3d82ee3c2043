#!/bin/sh
# Build the seed corpora in fuzz/corpus/<target>/ (not kept in git): the RFC 4475 torture
# messages of tests/sip-torture/, the same with example.com in their header lines turned
# into example.test (the harness's domain, so that they reach the registrar and the
# registrar lookup instead of DNS), and the messages written below. For the stream target
# every seed gets a leading 0 byte: no cuts, the rest is the stream (see split_stream).
# Safe to run again: existing corpus files (what the fuzzer found) are kept.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
torture="$here/../tests/sip-torture"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for f in "$torture"/*.dat; do
    name=$(basename "$f" .dat)
    cp "$f" "$work/$name"
    # Header lines only (up to the first blank line): the body and its length stay as they are.
    sed '1,/^\r*$/ s/example\.com/example.test/g' "$f" > "$work/$name-test"
    cmp -s "$f" "$work/$name-test" && rm "$work/$name-test"
done

# seed NAME: a message from standard input, LF turned into CRLF.
seed() { sed 's/$/\r/' > "$work/$1"; }

seed register <<'EOF'
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-reg1;rport
Max-Forwards: 70
From: <sip:alice@example.test>;tag=a1
To: <sip:alice@example.test>
Call-ID: reg-1@192.0.2.7
CSeq: 1 REGISTER
Contact: <sip:alice@192.0.2.7:5070>;expires=3600
Expires: 3600
Content-Length: 0

EOF

seed register-many <<'EOF'
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/TCP 192.0.2.7:5070;branch=z9hG4bK-reg2
Max-Forwards: 70
From: "Alice" <sip:alice@example.test>;tag=a2
To: "Alice" <sip:alice@example.test>
Call-ID: reg-2@192.0.2.7
CSeq: 2 REGISTER
Supported: path, outbound
Path: <sip:edge.example.test;lr>
Contact: <sip:alice@192.0.2.7:5070;transport=tcp>;q=0.8;+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>";reg-id=1
Contact: <sip:alice@[2001:db8::7]:5070>;expires=60, <sip:alice@phone.example.test>;q=0.1
Content-Length: 0

EOF

seed unregister <<'EOF'
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-reg3
Max-Forwards: 70
From: <sip:alice@example.test>;tag=a3
To: <sip:alice@example.test>
Call-ID: reg-3@192.0.2.7
CSeq: 3 REGISTER
Contact: *
Expires: 0
Content-Length: 0

EOF

seed register-auth <<'EOF'
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-reg4;rport
Max-Forwards: 70
From: <sip:alice@example.test>;tag=a4
To: <sip:alice@example.test>
Call-ID: reg-4@192.0.2.7
CSeq: 4 REGISTER
Authorization: Digest username="alice", realm="example.test", nonce="AAAAAGZ1enoAAAAAAAAAAAAAAAAAAAAAAAAAAA", uri="sip:example.test", response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee", opaque=""
Contact: <sip:alice@192.0.2.7:5070>
Content-Length: 0

EOF

seed invite <<'EOF'
INVITE sip:alice@example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.8:5060;branch=z9hG4bK-inv1;rport
Max-Forwards: 70
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>
Call-ID: inv-1@192.0.2.8
CSeq: 1 INVITE
Contact: <sip:bob@192.0.2.8:5060>
Proxy-Authorization: Digest username="bob", realm="example.test", nonce="x", uri="sip:alice@example.test", response="00000000000000000000000000000000", algorithm=SHA-256
Content-Type: application/sdp
Content-Length: 4

v=0
EOF

seed invite-ip <<'EOF'
MESSAGE sip:carol@192.0.2.9:5080;transport=tcp SIP/2.0
Via: SIP/2.0/UDP 192.0.2.8:5060;branch=z9hG4bK-msg1
Max-Forwards: 2
Route: <sip:192.0.2.10;lr>
From: <sip:bob@example.test>;tag=b2
To: <sip:carol@192.0.2.9>
Call-ID: msg-1@192.0.2.8
CSeq: 7 MESSAGE
Content-Length: 0

EOF

seed bye-in-dialog <<'EOF'
BYE sip:alice@192.0.2.7:5070 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.8:5060;branch=z9hG4bK-bye1
Max-Forwards: 70
Route: <sip:example.test;lr;sfr=0123456789abcdef0123>
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>;tag=a9
Call-ID: inv-1@192.0.2.8
CSeq: 2 BYE
Content-Length: 0

EOF

seed ack <<'EOF'
ACK sip:alice@example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.8:5060;branch=z9hG4bK-inv1
Max-Forwards: 70
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>;tag=sf0123456789abcdef
Call-ID: inv-1@192.0.2.8
CSeq: 1 ACK
Content-Length: 0

EOF

seed options-instance <<'EOF'
OPTIONS sip:127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.8:5060;branch=z9hG4bK-opt1
Max-Forwards: 70
From: <sip:monitor@example.test>;tag=m1
To: <sip:127.0.0.1:5060>
Call-ID: opt-1@192.0.2.8
CSeq: 1 OPTIONS
Require: path
Content-Length: 0

EOF

seed response <<'EOF'
SIP/2.0 200 OK
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf0123456789.abcdef;sfc=1;sfm=0123456789abcdef0123;rport=5060
Via: SIP/2.0/UDP 192.0.2.8:5060;branch=z9hG4bK-inv1;received=192.0.2.8;rport=5060
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>;tag=a9
Call-ID: inv-1@192.0.2.8
CSeq: 1 INVITE
Contact: <sip:alice@192.0.2.7:5070>
Record-Route: <sip:example.test;lr;sfr=0123456789abcdef0123>
Content-Length: 0

EOF

seed register-tcp <<'EOF'
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/TCP 192.0.2.7:5070;branch=z9hG4bK-reg5
Max-Forwards: 70
From: <sip:alice@example.test>;tag=a5
To: <sip:alice@example.test>
Call-ID: reg-5@192.0.2.7
CSeq: 5 REGISTER
Contact: <sip:alice@192.0.2.7:5070;transport=tcp>;expires=600
Content-Length: 0

EOF

# Over TCP: a ping, a registration over the connection, then a call to the user it
# registered (forwarded back over that connection), then the same with a Path.
{ printf '\r\n\r\n'; cat "$work/register-tcp" "$work/invite"; } > "$work/tcp-register-then-invite"
cat "$work/register-many" "$work/invite" > "$work/tcp-register-path-then-invite"

# A STUN Binding request (RFC 5389) and a blank keep-alive.
printf '\000\001\000\000\041\022\244\102abcdefghijkl' > "$work/stun"
printf '\r\n\r\n' > "$work/keepalive"

for target in message stream auth; do
    dir="$here/corpus/$target"
    mkdir -p "$dir"
    for f in "$work"/*; do
        if [ "$target" = stream ]; then
            { printf '\000'; cat "$f"; } > "$dir/seed-$(basename "$f")"
        else
            cp "$f" "$dir/seed-$(basename "$f")"
        fi
    done
    echo "$dir: $(ls "$dir" | wc -l) files"
done
