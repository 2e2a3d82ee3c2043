//! One pipelined meta-protocol connection to one memcached node.
//!
//! Why not the memcache crate's client here: measured on this project's bench (see
//! bench/RESULTS.md), the crate runs one request per pooled connection, so every operation
//! costs a write and a read system call on both sides and memcached wakes once per
//! operation: at 8,000 REGISTER/s that was 32.5 us of memcached CPU per REGISTER (4
//! operations) on top of sipfarm's own 57.5 us. Here every request of every task goes over a
//! single connection per node; the writer sends everything queued since its last write in one
//! system call (flushed once per turn), and the reader matches answers in order. memcached
//! then serves many operations per wake-up. The crate's client stays selectable
//! (`memcached.pipeline = false`) so that both can be measured.
//!
//! Only the four commands the farm needs: `mg` (value and CAS), `ms` in add mode or with a
//! compare-CAS, and `mn`. Keys are ours (prefix + hex), never from the network. Every answer
//! is bounded in size; a protocol error or a closed connection fails every request in flight
//! and the next request dials again.
//!
//! Two kinds of failure are told apart ([`Failure`]): an error answer to one request
//! (`SERVER_ERROR out of memory` from a full node, `CLIENT_ERROR`, `ERROR`, an answer that
//! does not fit the command) comes from a node that is alive and the connection goes on;
//! no answer at all (connect failure, closed connection, broken framing, a queue that no
//! longer drains) is what a dead node looks like.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Largest value accepted from a node (memcached's own item limit is 1 MiB by default).
const MAX_VALUE: usize = 8 << 20;
/// Requests queued toward one node before new ones fail at once (a frozen node).
const QUEUE: usize = 8192;
/// Most requests sent in one write.
const BATCH: usize = 256;

/// An answer, as the farm needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `VA`: value and CAS.
    Value(Vec<u8>, u64),
    /// `EN`: miss.
    Miss,
    /// `HD`: stored, with the item's new CAS.
    Stored(Option<u64>),
    /// `NS` (add of an existing key) or `EX` (CAS mismatch).
    Conflict,
    /// `NF`: not found (CAS on a vanished item).
    NotFound,
    /// `MN`: the no-op.
    Noop,
}

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The node answered with an error: it is alive.
    Refused(String),
    /// No answer (connection failed, closed or broken, queue full).
    Lost(String),
}

type Reply = Result<Answer, Failure>;

struct Request {
    bytes: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

type InFlight = Arc<Mutex<VecDeque<oneshot::Sender<Reply>>>>;

/// The handle: cheap to share, one background connection behind it.
pub(crate) struct Pipeline {
    addr: String,
    connect_timeout: Duration,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
}

impl Pipeline {
    pub(crate) fn new(addr: &str, connect_timeout: Duration) -> Pipeline {
        Pipeline {
            addr: addr.to_owned(),
            connect_timeout,
            tx: Mutex::new(None),
        }
    }

    fn sender(&self) -> mpsc::Sender<Request> {
        let mut guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = guard.as_ref().filter(|t| !t.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(self.addr.clone(), self.connect_timeout, rx));
        *guard = Some(tx.clone());
        tx
    }

    async fn call(&self, bytes: Vec<u8>) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.sender()
            .try_send(Request { bytes, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Failure::Lost("request queue full".into()),
                mpsc::error::TrySendError::Closed(_) => Failure::Lost("connection closed".into()),
            })?;
        answer
            .await
            .map_err(|_| Failure::Lost("connection lost".into()))?
    }

    /// `mg <key> v c`: value and CAS, or a miss.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, Failure> {
        match self.call(format!("mg {key} v c\r\n").into_bytes()).await? {
            Answer::Value(v, cas) => Ok(Some((v, cas))),
            Answer::Miss => Ok(None),
            other => Err(unexpected("mg", &other)),
        }
    }

    /// `ms` in add mode (`cas` None) or compare-and-swap; the answer carries the new CAS.
    pub(crate) async fn store(
        &self,
        key: &str,
        value: &[u8],
        ttl: u32,
        cas: Option<u64>,
    ) -> Result<Answer, Failure> {
        let mut cmd = match cas {
            Some(c) => format!("ms {key} {} T{ttl} C{c} c\r\n", value.len()),
            None => format!("ms {key} {} T{ttl} ME c\r\n", value.len()),
        }
        .into_bytes();
        cmd.extend_from_slice(value);
        cmd.extend_from_slice(b"\r\n");
        match self.call(cmd).await? {
            a @ (Answer::Stored(_) | Answer::Conflict | Answer::NotFound) => Ok(a),
            other => Err(unexpected("ms", &other)),
        }
    }

    pub(crate) async fn noop(&self) -> Result<(), Failure> {
        match self.call(b"mn\r\n".to_vec()).await? {
            Answer::Noop => Ok(()),
            other => Err(unexpected("mn", &other)),
        }
    }
}

/// An answer of the wrong kind: the node answered, so it is alive.
fn unexpected(command: &str, answer: &Answer) -> Failure {
    Failure::Refused(format!("unexpected answer to {command}: {answer:?}"))
}

/// The connection task: dial, then write batches and read answers until something fails.
async fn run(addr: String, connect_timeout: Duration, mut rx: mpsc::Receiver<Request>) {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail_all(&mut rx, &format!("{addr}: {e}")),
        Err(_) => return fail_all(&mut rx, &format!("{addr}: connect timed out")),
    };
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let in_flight: InFlight = Arc::new(Mutex::new(VecDeque::new()));
    let reader_queue = in_flight.clone();
    let mut reader = tokio::spawn(read_answers(
        BufReader::with_capacity(64 * 1024, rd),
        reader_queue,
    ));
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { break };
                buf.clear();
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                {
                    let mut q = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                    for r in batch {
                        buf.extend_from_slice(&r.bytes);
                        q.push_back(r.reply);
                    }
                }
                if let Err(e) = wr.write_all(&buf).await {
                    fail_queue(&in_flight, &format!("{addr}: {e}"));
                    break;
                }
            }
            _ = &mut reader => {
                // The reader stopped (closed connection, protocol error): stop taking requests.
                break;
            }
        }
    }
    reader.abort();
    fail_queue(&in_flight, &format!("{addr}: connection closed"));
    rx.close();
    fail_all(&mut rx, &format!("{addr}: connection closed"));
}

fn fail_all(rx: &mut mpsc::Receiver<Request>, why: &str) {
    rx.close();
    while let Ok(r) = rx.try_recv() {
        let _ = r.reply.send(Err(Failure::Lost(why.to_owned())));
    }
}

fn fail_queue(q: &InFlight, why: &str) {
    let mut q = q.lock().unwrap_or_else(|p| p.into_inner());
    for s in q.drain(..) {
        let _ = s.send(Err(Failure::Lost(why.to_owned())));
    }
}

async fn read_answers(mut rd: BufReader<tokio::net::tcp::OwnedReadHalf>, q: InFlight) {
    let mut line = Vec::with_capacity(128);
    loop {
        let answer = match read_one(&mut rd, &mut line).await {
            Ok(a) => a,
            Err(e) => {
                fail_queue(&q, &e);
                return;
            }
        };
        let waiter = q.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        match waiter {
            Some(w) => {
                let _ = w.send(answer.map_err(Failure::Refused));
            }
            None => {
                fail_queue(&q, "answer without a request");
                return;
            }
        }
    }
}

/// Read one line of memcached's into `line` (its end kept), at most `max` bytes: a longer or
/// cut line is an error, never a bigger buffer. (`lru_crawler metadump` ends its lines in a
/// bare LF; protocol answers end in CRLF, which the caller checks.)
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
    line: &mut Vec<u8>,
    max: u64,
) -> Result<(), String> {
    line.clear();
    let n = (&mut *rd)
        .take(max)
        .read_until(b'\n', line)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    if !line.ends_with(b"\n") {
        return Err("line too long or cut".into());
    }
    Ok(())
}

/// Read one answer. Err(String) for a broken connection (ends the connection); Ok(Err) for an
/// error answer to one request (the connection goes on).
async fn read_one(
    rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> Result<Result<Answer, String>, String> {
    read_line(rd, line, 1024).await?;
    if !line.ends_with(b"\r\n") {
        return Err("answer line not ended by CRLF".into());
    }
    let text =
        std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| "answer not text".to_owned())?;
    let mut words = text.split(' ');
    let code = words.next().unwrap_or("");
    let flags: Vec<&str> = words.collect();
    let cas = || {
        flags
            .iter()
            .find_map(|f| f.strip_prefix('c'))
            .and_then(|c| c.parse::<u64>().ok())
    };
    Ok(match code {
        "VA" => {
            let size: usize = flags
                .first()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| "VA without size".to_owned())?;
            if size > MAX_VALUE {
                return Err(format!("value of {size} bytes refused"));
            }
            let mut data = vec![0u8; size + 2];
            rd.read_exact(&mut data).await.map_err(|e| e.to_string())?;
            if !data.ends_with(b"\r\n") {
                return Err("value not terminated".into());
            }
            data.truncate(size);
            match cas() {
                Some(c) => Ok(Answer::Value(data, c)),
                None => Ok(Answer::Value(data, 0)),
            }
        }
        "EN" => Ok(Answer::Miss),
        "HD" => Ok(Answer::Stored(cas())),
        "NS" | "EX" => Ok(Answer::Conflict),
        "NF" => Ok(Answer::NotFound),
        "MN" => Ok(Answer::Noop),
        "SERVER_ERROR" | "CLIENT_ERROR" => Err(text.to_owned()),
        "ERROR" => Err("ERROR".to_owned()),
        _ => return Err(format!("unknown answer: {text}")),
    })
}
