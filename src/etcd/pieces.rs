//! The bounded reads of one parallel scan, in key order.
//!
//! The range ahead is a row of pieces, each a bounded `[start, end)` read
//! once with a page limit. Up to `depth` pieces are read or held at once,
//! and pages are handed on from the front, so the output is in key order
//! and memory stays near `depth` pages. A piece that holds more than a page
//! has the rest of it cut into up to `depth` pieces read at once, so a
//! misjudged density (keys of digits leave most of the byte space empty)
//! costs round trips that overlap, not a chain of them.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::scan::Entry;
use super::space::Space;
use super::{EtcdError, Side};
use crate::planfile::SideRole;

/// What every read of one scan shares.
pub struct Shared {
    pub side: Arc<Side>,
    pub space: Space,
    pub revision: i64,
    /// The range's end (`None`: the end of the keyspace).
    pub end: Option<Vec<u8>>,
    /// Keys per request.
    pub limit: i64,
}

enum State {
    Waiting,
    Reading(JoinHandle<()>),
    Done(Vec<Entry>),
}

struct Piece {
    id: u64,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    /// Cut short on purpose (see [`Pieces::ramped`]): that it holds less
    /// than a page says nothing of the density.
    short: bool,
    state: State,
}

/// Short pieces a ramped scan starts with, and how much larger each is than
/// the one before: 1/64, 1/16 and 1/4 of a page (about 150, 600 and 2,500
/// keys of 200 bytes), then full pages.
const RAMP_PIECES: u32 = 3;
const RAMP_STEP: u128 = 4;

type Read = (u64, Result<(Vec<Entry>, bool), EtcdError>);

/// The pieces ahead of a scan and the reads in flight.
pub struct Pieces {
    shared: Arc<Shared>,
    depth: usize,
    row: VecDeque<Piece>,
    next_id: u64,
    /// Where the range not yet cut into pieces starts.
    tail: Option<Vec<u8>>,
    /// Key-space units a page covers, as seen last: the width of new pieces
    /// cut from the tail (density is local, so the latest sighting wins).
    span: u128,
    /// Short pieces still to cut before full ones (see [`Pieces::ramped`]).
    ramp: u32,
    done_tx: mpsc::UnboundedSender<Read>,
    done_rx: mpsc::UnboundedReceiver<Read>,
}

impl Pieces {
    pub fn new(shared: Shared, depth: usize, from: Vec<u8>, span: u128) -> Pieces {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Pieces {
            shared: Arc::new(shared),
            depth: depth.max(1),
            row: VecDeque::new(),
            next_id: 0,
            tail: Some(from),
            span: span.max(1),
            ramp: 0,
            done_tx,
            done_rx,
        }
    }

    /// The same, its first pieces cut short, each [`RAMP_STEP`] times the
    /// last, up to a full one, over a link known to be short: a full page
    /// (2 MiB) takes a loopback server 15-25 ms, and the writes that wait
    /// for a scan's first keys waited that long. Across a long link the
    /// round trip costs more than the page, so there pages are full at once.
    pub fn ramped(mut self) -> Pieces {
        if self.shared.side.short_link() {
            self.ramp = RAMP_PIECES;
        }
        self
    }

    /// The next page in key order (possibly empty); `None` at the range's end.
    pub async fn next(&mut self) -> Option<Result<Vec<Entry>, EtcdError>> {
        loop {
            if let Some(front) = self.row.front_mut()
                && let State::Done(page) = &mut front.state
            {
                let page = std::mem::take(page);
                self.row.pop_front();
                return Some(Ok(page));
            }
            if self.row.is_empty() && self.tail.is_none() {
                return None;
            }
            self.launch();
            let (id, read) = self.done_rx.recv().await?;
            match read {
                Ok((page, more)) => self.landed(id, page, more),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Starts reads, front first, while fewer than `depth` pieces are read
    /// or held, and fewer than half that many pages wait for their turn (a
    /// reader slower than the reads needs no deep read-ahead); the front
    /// piece is always started, so the scan moves on.
    fn launch(&mut self) {
        let (mut busy, mut held) = (0, 0);
        for piece in &self.row {
            match &piece.state {
                State::Waiting => {}
                State::Reading(_) => busy += 1,
                State::Done(page) => {
                    busy += 1;
                    held += usize::from(!page.is_empty());
                }
            }
        }
        let depth = self.depth;
        let room = |busy: usize| busy < depth && held < depth.div_ceil(2);
        for i in 0..self.row.len() {
            if !room(busy) && i > 0 {
                break;
            }
            if matches!(self.row[i].state, State::Waiting) {
                self.start(i);
                busy += 1;
            }
        }
        while room(busy)
            && let Some(from) = self.tail.take()
        {
            let (bounds, short) = self.cut_tail(from);
            self.push(self.row.len(), bounds, short);
            self.start(self.row.len() - 1);
            busy += 1;
        }
    }

    /// Cuts one span off the tail (a fraction of it while the ramp lasts):
    /// returns the new piece's bounds and whether it was cut short, and sets
    /// the tail to what follows it.
    fn cut_tail(&mut self, from: Vec<u8>) -> ((Vec<u8>, Option<Vec<u8>>), bool) {
        let (width, short) = (cut_width(self.span, self.ramp), self.ramp > 0);
        self.ramp = self.ramp.saturating_sub(1);
        let shared = &self.shared;
        let hi_n = shared
            .end
            .as_ref()
            .map_or(u128::MAX, |e| shared.space.num(e));
        let end_n = shared.space.num(&from).saturating_add(width);
        let mut end = shared.space.key(end_n);
        if end <= from {
            end = from.clone();
            end.push(0);
        }
        let bounds = if end_n >= hi_n || !before(&end, &shared.end) {
            (from, shared.end.clone())
        } else {
            self.tail = Some(end.clone());
            (from, Some(end))
        };
        (bounds, short)
    }

    fn push(&mut self, at: usize, (start, end): (Vec<u8>, Option<Vec<u8>>), short: bool) {
        self.next_id += 1;
        let piece = Piece {
            id: self.next_id,
            start,
            end,
            short,
            state: State::Waiting,
        };
        self.row.insert(at, piece);
    }

    fn start(&mut self, i: usize) {
        let piece = &mut self.row[i];
        let shared = self.shared.clone();
        let answer = Answer {
            id: piece.id,
            role: shared.side.role,
            done: Some(self.done_tx.clone()),
        };
        let (start, end) = (piece.start.clone(), piece.end.clone());
        piece.state = State::Reading(tokio::spawn(async move {
            let page = super::scan::read_page(
                &shared.side,
                &start,
                end.as_deref(),
                shared.limit,
                shared.revision,
            )
            .await
            .and_then(|p| {
                faithful(&start, &end, &p.entries, p.more).map_err(|detail| {
                    EtcdError::Request {
                        side: shared.side.role,
                        operation: "parallel read".into(),
                        detail: detail.into(),
                    }
                })?;
                Ok((p.entries, p.more))
            });
            answer.send(page);
        }));
    }

    /// A read came back: its page is held for its turn; when the piece holds
    /// more, the rest is cut into pieces read next.
    fn landed(&mut self, id: u64, page: Vec<Entry>, more: bool) {
        let Some(i) = self.row.iter().position(|p| p.id == id) else {
            return;
        };
        let space = &self.shared.space;
        let piece = &self.row[i];
        let width = piece
            .end
            .as_ref()
            .map_or(u128::MAX, |e| space.num(e))
            .saturating_sub(space.num(&piece.start));
        let (n, limit) = (page.len() as u128, self.shared.limit.max(1) as u128);
        let rest = match (more, page.first(), page.last()) {
            (true, Some(first), Some(last)) => {
                let covered = space.num(&last.key).saturating_sub(space.num(&first.key));
                self.span = covered.max(1).saturating_mul(limit) / n.max(1);
                let mut from = last.key.clone();
                from.push(0);
                Some((from, piece.end.clone(), covered.max(1)))
            }
            _ => {
                if !more && piece.end.is_some() && !piece.short {
                    // Less than a page: a page covers more (at most 16 times).
                    let grow = (limit / n.max(1)).clamp(1, 16);
                    self.span = width.saturating_mul(grow).max(1);
                }
                None
            }
        };
        self.row[i].state = State::Done(page);
        if let Some((from, end, covered)) = rest {
            for (k, bounds) in self.split(from, end, covered, n).into_iter().enumerate() {
                self.push(i + 1 + k, bounds, false);
            }
        }
    }

    /// `[from, end)` in up to `depth` pieces of equal key-space width, as
    /// many as the pages the density just seen says it holds.
    fn split(
        &self,
        from: Vec<u8>,
        end: Option<Vec<u8>>,
        covered: u128,
        seen: u128,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let space = &self.shared.space;
        let lo = space.num(&from);
        let hi = end.as_ref().map_or(u128::MAX, |e| space.num(e));
        let width = hi.saturating_sub(lo);
        let keys = (width / covered).saturating_mul(seen.max(1));
        let pages = keys.div_ceil(self.shared.limit.max(1) as u128);
        let parts = pages.clamp(1, self.depth as u128);
        let mut out = Vec::new();
        let mut start = from;
        for k in 1..parts {
            let cut = space.key(lo.saturating_add(width / parts * k));
            if cut > start && before(&cut, &end) {
                out.push((std::mem::replace(&mut start, cut.clone()), Some(cut)));
            }
        }
        out.push((start, end));
        out
    }
}

/// Where a read sends its answer. A read that ends without one (it
/// panicked) still answers, with an error, so the scan never waits on it.
struct Answer {
    id: u64,
    role: SideRole,
    done: Option<mpsc::UnboundedSender<Read>>,
}

impl Answer {
    fn send(mut self, read: Result<(Vec<Entry>, bool), EtcdError>) {
        if let Some(done) = self.done.take() {
            let _ = done.send((self.id, read));
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send((
                self.id,
                Err(EtcdError::Request {
                    side: self.role,
                    operation: "parallel read".into(),
                    detail: "the read ended without an answer".into(),
                }),
            ));
        }
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        for piece in &self.row {
            if let State::Reading(task) = &piece.state {
                task.abort();
            }
        }
    }
}

/// A page that could make the scan skip keys is refused: keys out of order
/// or outside `[start, end)`, or "more" with no key to go on from.
fn faithful(
    start: &[u8],
    end: &Option<Vec<u8>>,
    page: &[Entry],
    more: bool,
) -> Result<(), &'static str> {
    if more && page.is_empty() {
        return Err("the server said the range holds more keys but sent none");
    }
    let inside = page.first().is_none_or(|e| e.key.as_slice() >= start)
        && page.last().is_none_or(|e| before(&e.key, end));
    if !inside || page.windows(2).any(|w| w[0].key >= w[1].key) {
        return Err("the server sent keys outside the range asked for, or out of order");
    }
    Ok(())
}

/// The key-space width of the next piece cut from the tail: a page's, or
/// while `ramp` short pieces are still to come, a fraction of it.
fn cut_width(span: u128, ramp: u32) -> u128 {
    (span >> (RAMP_STEP.ilog2() * ramp)).max(1)
}

fn before(key: &[u8], hi: &Option<Vec<u8>>) -> bool {
    hi.as_ref().is_none_or(|h| key < h.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(keys: &[&str]) -> Vec<Entry> {
        keys.iter()
            .map(|k| Entry {
                key: k.as_bytes().to_vec(),
                value: Vec::new(),
                mod_revision: 1,
                create_revision: 1,
                lease: 0,
            })
            .collect()
    }

    #[test]
    fn a_read_that_ends_without_an_answer_still_answers() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let answer = Answer {
            id: 7,
            role: SideRole::Source,
            done: Some(tx.clone()),
        };
        drop(answer);
        let (id, read) = rx.try_recv().expect("an answer");
        assert_eq!(id, 7);
        assert!(read.is_err());
        Answer {
            id: 8,
            role: SideRole::Source,
            done: Some(tx),
        }
        .send(Ok((Vec::new(), false)));
        let (id, read) = rx.try_recv().expect("an answer");
        assert_eq!(id, 8);
        assert!(read.is_ok());
        assert!(rx.try_recv().is_err(), "one answer per read");
    }

    #[test]
    fn a_ramp_cuts_a_sixty_fourth_then_a_sixteenth_then_a_quarter_of_a_page() {
        let widths: Vec<u128> = (0..=RAMP_PIECES)
            .rev()
            .map(|r| cut_width(6400, r))
            .collect();
        assert_eq!(widths, [100, 400, 1600, 6400]);
        // Never an empty piece, however thin the page.
        assert_eq!(cut_width(1, RAMP_PIECES), 1);
        assert_eq!(cut_width(u128::MAX, 0), u128::MAX);
    }

    #[test]
    fn pages_that_could_skip_keys_are_refused() {
        let end = Some(b"/p/m".to_vec());
        assert!(faithful(b"/p/a", &end, &entries(&["/p/a", "/p/b"]), true).is_ok());
        assert!(faithful(b"/p/a", &end, &[], false).is_ok());
        assert!(faithful(b"/p/a", &end, &[], true).is_err());
        assert!(faithful(b"/p/a", &end, &entries(&["/p/b", "/p/a"]), false).is_err());
        assert!(faithful(b"/p/a", &end, &entries(&["/p/b", "/p/b"]), false).is_err());
        assert!(faithful(b"/p/b", &end, &entries(&["/p/a"]), false).is_err());
        assert!(faithful(b"/p/a", &end, &entries(&["/p/m"]), false).is_err());
        assert!(faithful(b"", &None, &entries(&["\u{7f}"]), false).is_ok());
    }
}
