//! A gzip writer (RFC 1952 around RFC 1951 deflate) that compresses a Prometheus exposition
//! using what its encoder knows about it, instead of searching for repeats.
//!
//! A general compressor hashes every input position to find repeats. In an exposition of real,
//! random container IDs each container's label prefix last appeared one family earlier: ~100
//! lines, more than deflate's 32 KiB window back from about 100 containers on, so the ~100 bytes
//! of hex per line are searched for repeats that cannot be used. But the repeats are known in
//! advance: every container series line is `name{` + that container's label prefix (rendered
//! once, ~200–400 bytes) + extra labels + `} ` + value, so the prefix repeats the same
//! container's line in the previous family (when that is in reach), and `name{` and the extra
//! labels repeat the line before. The encoder records where those parts are ([`LineHint`]) and
//! this writer emits copies for them directly, plus a copy script per container against the
//! previous line's prefix for when the previous family is out of reach; the script's literals
//! (the hex) are Huffman-coded once and their bits reused on the container's later lines, and
//! scripts are carried from one body to the next ([`GzipCarry`]). Adjacent copies from the same
//! distance are merged. Literals are coded with one Huffman table per body, built on its first
//! chunk (and reused for a few bodies when carried).
//!
//! Hints are only suggestions: every copy is compared with the bytes it stands for before it
//! is emitted, except inside a script, which is applied only to exactly the two prefixes it
//! was made for (compared whole with stored copies), where its copies hold by construction;
//! reused literal bits are likewise only written for the bytes they were coded from. So a
//! wrong or stale hint costs compression, never correctness; bytes without a hint are
//! compressed against the previous line only. The fuzz target `deflate` (podstat's fuzz/)
//! checks exactly that against flate2's decoder.
//!
//! Cost: `cargo bench -p hinted-deflate` (an exposition of 40 families with random IDs, 64 KiB
//! chunks, carried state) against flate2 with zlib-rs at level 1, on a quiet 2-core VM: 100
//! containers (1.4 MiB) 0.7 vs 3.4 ms, 264 vs 400 KiB out; 1000 containers (13.8 MiB) 8–12 vs
//! 35 ms, 2.5 vs 3.9 MiB out (README.md).

/// Where the parts of one series line are, as offsets into the chunk passed to
/// [`HintedGzip::push`]: `start` ≤ `prefix_start` ≤ `prefix_end` ≤ `value_start`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineHint {
    /// The first byte of the metric name.
    pub start: u32,
    /// The first byte of the container's label prefix (after `{`).
    pub prefix_start: u32,
    /// One past the prefix's last byte.
    pub prefix_end: u32,
    /// The first byte of the value (after `} `).
    pub value_start: u32,
    /// Which container the prefix belongs to (an index, the same for all its lines).
    pub container: u32,
}

/// Deflate's window: the farthest back a copy may reach.
const WINDOW: usize = 32 * 1024;
const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const END_OF_BLOCK: usize = 256;
const MATCH_FLAG: u32 = 1 << 31;

/// A gzip member written incrementally from chunks of the body.
pub struct HintedGzip {
    bits: BitWriter,
    crc: crc32fast::Hasher,
    /// The last ≥ 32 KiB of input and the current chunk; `win[0]` is input offset `win_base`.
    win: Vec<u8>,
    win_base: u64,
    total_in: u64,
    coder: Coder,
    /// Per container: input offset of its last prefix (`u64::MAX`: none yet).
    last_prefix: Vec<u64>,
    /// Per container: a hash of its prefix's bytes (0: not hashed yet), which names its copy
    /// scripts across collections.
    prefix_keys: Vec<u64>,
    /// Per container: the copy scripts it uses against the previous line's prefix, as
    /// (previous container, script in `carry.scripts`), for the last two predecessors
    /// (`u32::MAX`: none); two, because families with fewer rows (network: pod sandboxes
    /// only) give a container another predecessor than the rest.
    slots: Vec<[(u32, u32); 2]>,
    prev_line: Option<AbsHint>,
    /// The last prefix found equal to a stored one: (its input offset, the stored span), so
    /// the next line's script need not compare the same bytes again.
    checked: Option<(u64, Span)>,
    /// A copy not yet written, so that copies from the same distance that follow each other
    /// (`name{` and the start of the prefix, the end of the prefix and the extra labels) are
    /// written as one.
    pending: Option<PendingCopy>,
    carry: GzipCarry,
}

/// What one body's compression hands to the next (see [`HintedGzip::resume`]): the Huffman
/// table, the copy scripts and their coded literals, and the window's buffer. Consecutive
/// collections hold the same containers, so their scripts are matched and their hex coded
/// once, not once per collection, and the window's pages stay mapped.
#[derive(Default)]
pub struct GzipCarry {
    /// The code lengths in use (written at the head of every body, and the tables are made
    /// from them) and how many bodies they have coded; sized again every [`RESIZE_EVERY`].
    table: Option<CarriedTable>,
    scripts: ScriptCache,
    comments: CommentBits,
    matcher: ScriptMatcher,
    win: Vec<u8>,
    /// The last body's compressed size, to size the next output buffer once.
    last_out: usize,
    /// A finished body's buffer, handed back once nothing serves it
    /// ([`GzipCarry::recycle_output`]).
    spare_out: Vec<u8>,
}

impl GzipCarry {
    /// Keeps a served body's buffer for the next body. A body of a few hundred KiB comes from
    /// its own mapping (see `malloc_tuning`), so a fresh one per scrape costs an mmap, a
    /// page fault per 4 KiB written, and an munmap: ~2 % of a scrape's CPU at 100
    /// containers (perf), more than compressing a tenth of the body.
    pub fn recycle_output(&mut self, buf: Vec<u8>) {
        if buf.capacity() > self.spare_out.capacity() {
            self.spare_out = buf;
        }
    }

    /// The capacity of the kept output buffer (tests).
    pub fn spare_output_capacity(&self) -> usize {
        self.spare_out.capacity()
    }
}

struct CarriedTable {
    lit_len: [u8; 286],
    dist_len: [u8; 30],
    bodies: u32,
}

/// Bodies coded with one carried table before it is sized again on the next body's first
/// chunk: often enough to follow a change in what the body holds (new label values), rarely
/// enough that sizing and recoding the script literals cost nothing per scrape.
const RESIZE_EVERY: u32 = 64;

/// Copy scripts keyed by the (previous, current) prefix hashes, with their ops, the bytes of
/// both prefixes they were made for, and per literal op its bits already Huffman-coded.
///
/// A script is applied only to exactly the bytes it was made for (two comparisons per line,
/// one when the line before was checked against the same stored prefix): then every copy in
/// it is right by construction and its ops are emitted without comparing each one, and the
/// ~100 letters of hex a container's prefix cannot copy are written a word at a time.
#[derive(Default)]
struct ScriptCache {
    index: std::collections::HashMap<(u64, u64), u32>,
    scripts: Vec<Script>,
    ops: Vec<ScriptOp>,
    /// Parallel to `ops`: the coded bits of literal ops.
    lits: Vec<LitRun>,
    lit_bits: Vec<u64>,
    /// Each prefix a script was made for, once, by its hash.
    prefixes: std::collections::HashMap<u64, Span>,
    prefix_bytes: Vec<u8>,
    /// Counts bodies; a script not used in the latest one is dropped when the cache is
    /// compacted.
    epoch: u32,
}

#[derive(Debug, Clone, Copy)]
struct Script {
    from: u32,
    to: u32,
    /// The previous and the current prefix, in `prefix_bytes`.
    prev: Span,
    cur: Span,
    key: (u64, u64),
    used: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    at: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.at as usize..(self.at + self.len) as usize
    }
}

#[derive(Debug, Clone, Copy)]
struct PendingCopy {
    end: u64,
    dist: usize,
    len: usize,
}

/// The coded bits of comment lines (`# HELP`, `# TYPE`), by the hash of their bytes: they
/// are the same in every body (~110 lines, 8 KiB, most of a small body's cost to compress),
/// so each is coded once per table and then written a word at a time. Cleared with the table.
#[derive(Default)]
struct CommentBits {
    index: std::collections::HashMap<u64, u32>,
    /// Each line's bytes (in `bytes`, to compare) and its bits (in `bits`).
    lines: Vec<(Span, LitRun)>,
    bytes: Vec<u8>,
    bits: Vec<u64>,
}

/// Comment lines kept at most; past it the cache starts again (families are a fixed set, so
/// only a body of unexpected comments would get there).
const MAX_COMMENT_LINES: usize = 4096;

impl CommentBits {
    fn clear(&mut self) {
        self.index.clear();
        self.lines.clear();
        self.bytes.clear();
        self.bits.clear();
    }
}

/// One literal op's coded bits: at `words` in `lit_bits`; `nbits == 0`: not coded yet.
#[derive(Debug, Clone, Copy, Default)]
struct LitRun {
    words: u32,
    nbits: u32,
}

/// The window is kept up to this size, then all but its last [`WINDOW`] bytes are dropped:
/// moving 32 KiB once per ~224 KiB of input instead of on every chunk.
const KEEP: usize = 8 * WINDOW;

/// The body is one deflate block with one Huffman table, sized on the first chunk; after that
/// every token is written as soon as it is found. Per-block tables (a second pass over a
/// token buffer, as general compressors do) measured ~2x the cost per token, and the body's
/// letters (names, hex, digits) do not change along it.
enum Coder {
    /// Tokens of the first chunk, kept to count symbols.
    Sizing {
        tokens: Vec<u32>,
        lit_freq: Box<[u32; 286]>,
        dist_freq: [u32; 30],
    },
    Writing(Box<Tables>),
}

/// Each symbol's whole bit string (code, then extra bits) and its length.
struct Tables {
    lit: [(u32, u32); 256],
    length: [(u32, u32); 256],
    dist: [(u16, u8); 30],
    end: (u32, u32),
}

impl Tables {
    /// Code lengths for the symbol counts; every symbol gets a code (a count of at least 1),
    /// so whatever the rest of the body holds can be written with a table made from its start.
    fn lengths(lit_freq: &[u32; 286], dist_freq: &[u32; 30]) -> ([u8; 286], [u8; 30]) {
        let lit_freq: Vec<u32> = lit_freq.iter().map(|&f| f.saturating_add(1)).collect();
        let dist_freq: Vec<u32> = dist_freq.iter().map(|&f| f.saturating_add(1)).collect();
        let mut lit_len = [0u8; 286];
        let mut dist_len = [0u8; 30];
        code_lengths(&lit_freq, 15, &mut lit_len);
        code_lengths(&dist_freq, 15, &mut dist_len);
        (lit_len, dist_len)
    }

    /// The tables for these code lengths: made again for each body (a few microseconds), so
    /// only the lengths are carried between bodies.
    fn from_lengths(lit_len: &[u8; 286], dist_len: &[u8; 30]) -> Self {
        let lit_codes = canonical_codes(lit_len);
        let dist_codes = canonical_codes(dist_len);
        let mut t = Tables {
            lit: [(0, 0); 256],
            length: [(0, 0); 256],
            dist: [(0, 0); 30],
            end: (lit_codes[END_OF_BLOCK] as u32, lit_len[END_OF_BLOCK] as u32),
        };
        for (b, e) in t.lit.iter_mut().enumerate() {
            *e = (lit_codes[b] as u32, lit_len[b] as u32);
        }
        for (l, e) in t.length.iter_mut().enumerate() {
            let (sym, extra_bits, extra) = LENGTH_CODES[l];
            let s = 257 + sym as usize;
            *e = (
                lit_codes[s] as u32 | (extra as u32) << lit_len[s],
                lit_len[s] as u32 + extra_bits as u32,
            );
        }
        for (d, e) in t.dist.iter_mut().enumerate() {
            *e = (dist_codes[d], dist_len[d]);
        }
        t
    }

    #[inline]
    fn copy(&self, bits: &mut BitWriter, len_minus_3: usize, dist_minus_1: usize) {
        self.copy_coded(bits, len_minus_3, self.distance(dist_minus_1));
    }

    /// A distance's whole bit string (code, then extra bits) and its length.
    #[inline]
    fn distance(&self, dist_minus_1: usize) -> (u64, u32) {
        let (dsym, dbits, dextra) = dist_code(dist_minus_1);
        let (dcode, dlen) = self.dist[dsym as usize];
        (dcode as u64 | (dextra as u64) << dlen, dlen as u32 + dbits)
    }

    /// One match token whose distance is already coded ([`Tables::distance`]).
    #[inline]
    fn copy_coded(&self, bits: &mut BitWriter, len_minus_3: usize, (dist, dist_len): (u64, u32)) {
        let (code, len) = self.length[len_minus_3 & 0xff];
        bits.put(code as u64 | dist << len, len + dist_len);
    }
}

/// A [`LineHint`] in input offsets.
#[derive(Debug, Clone, Copy)]
struct AbsHint {
    start: u64,
    prefix_start: u64,
    prefix_end: u64,
    value_start: u64,
    container: u32,
}

/// One step of a prefix's copy script: `len` bytes at `at` in the prefix are a copy of the
/// bytes at `src` in the previous prefix (`from_prev`) or earlier in this one; or literals.
#[derive(Debug, Clone, Copy)]
struct ScriptOp {
    at: u32,
    len: u32,
    src: u32,
    kind: OpKind,
}

impl ScriptOp {
    fn literals(at: usize, len: usize) -> Self {
        ScriptOp {
            at: at as u32,
            len: len as u32,
            src: 0,
            kind: OpKind::Literal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Literal,
    FromPrev,
    FromSelf,
}

impl Default for HintedGzip {
    fn default() -> Self {
        Self::new()
    }
}

impl HintedGzip {
    pub fn new() -> Self {
        Self::resume(GzipCarry::default())
    }

    /// A new member that starts from what the previous one left ([`HintedGzip::finish_carry`]).
    pub fn resume(mut carry: GzipCarry) -> Self {
        let mut out = std::mem::take(&mut carry.spare_out);
        out.clear();
        out.reserve(carry.last_out + carry.last_out / 8);
        let mut bits = BitWriter {
            out,
            ..BitWriter::default()
        };
        // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=4 (fastest) OS=255 (unknown).
        bits.out
            .extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
        carry.table = carry.table.filter(|t| t.bodies < RESIZE_EVERY);
        let coder = match &mut carry.table {
            Some(t) => {
                write_block_header(&mut bits, &t.lit_len, &t.dist_len);
                t.bodies += 1;
                Coder::Writing(Box::new(Tables::from_lengths(&t.lit_len, &t.dist_len)))
            }
            None => Coder::Sizing {
                tokens: Vec::new(),
                lit_freq: Box::new([0; 286]),
                dist_freq: [0; 30],
            },
        };
        carry.scripts.epoch = carry.scripts.epoch.wrapping_add(1);
        let mut win = std::mem::take(&mut carry.win);
        win.clear();
        HintedGzip {
            bits,
            crc: crc32fast::Hasher::new(),
            win,
            win_base: 0,
            total_in: 0,
            coder,
            last_prefix: Vec::new(),
            prefix_keys: Vec::new(),
            slots: Vec::new(),
            prev_line: None,
            checked: None,
            pending: None,
            carry,
        }
    }

    /// Compresses the next piece of the body. Hints (offsets into `chunk`) must be in order;
    /// ones that are out of order or out of range are ignored.
    pub fn push(&mut self, chunk: &[u8], hints: &[LineHint]) {
        let at = self.window().len();
        self.win.extend_from_slice(chunk);
        self.compress(hints, self.win_base + at as u64);
    }

    /// The buffer the next piece of the body is appended to, before
    /// [`HintedGzip::compress_appended`]: the encoder writes straight into the window, so the
    /// body is not copied.
    pub fn window(&mut self) -> &mut Vec<u8> {
        if self.win.len() > KEEP {
            let drop = self.win.len() - WINDOW;
            self.win.drain(..drop);
            self.win_base += drop as u64;
        }
        &mut self.win
    }

    /// Compresses what was appended to [`HintedGzip::window`]; hints are offsets into the
    /// window as it was handed out.
    pub fn compress_appended(&mut self, hints: &[LineHint]) {
        self.compress(hints, self.win_base);
    }

    fn compress(&mut self, hints: &[LineHint], hint_base: u64) {
        let from = self.total_in;
        self.crc
            .update(&self.win[(from - self.win_base) as usize..]);
        self.total_in = self.win_base + self.win.len() as u64;
        let mut pos = from;
        for h in hints {
            let line = AbsHint {
                start: hint_base + h.start as u64,
                prefix_start: hint_base + h.prefix_start as u64,
                prefix_end: hint_base + h.prefix_end as u64,
                value_start: hint_base + h.value_start as u64,
                container: h.container,
            };
            let ok = line.start >= pos
                && line.start <= line.prefix_start
                && line.prefix_start <= line.prefix_end
                && line.prefix_end <= line.value_start
                && line.value_start <= self.total_in;
            if !ok {
                continue;
            }
            self.unhinted(pos, line.start);
            self.line(line);
            pos = self.value(line.value_start);
        }
        self.unhinted(pos, self.total_in);
        self.start_writing();
    }

    /// Ends the member and returns it.
    pub fn finish(self) -> Vec<u8> {
        self.finish_carry().0
    }

    /// Ends the member and returns it with what the next one can start from.
    pub fn finish_carry(mut self) -> (Vec<u8>, GzipCarry) {
        self.flush_copy();
        self.start_writing();
        if let Coder::Writing(t) = &self.coder {
            self.bits.put(t.end.0 as u64, t.end.1);
        }
        self.bits.flush();
        let mut out = std::mem::take(&mut self.bits.out);
        out.extend_from_slice(&self.crc.finalize().to_le_bytes());
        out.extend_from_slice(&(self.total_in as u32).to_le_bytes());
        let mut carry = std::mem::take(&mut self.carry);
        carry.win = self.win;
        carry.last_out = out.len();
        carry.scripts.compact();
        (out, carry)
    }

    fn byte(&self, at: u64) -> u8 {
        self.win[(at - self.win_base) as usize]
    }

    fn slice(&self, at: u64, len: usize) -> &[u8] {
        let i = (at - self.win_base) as usize;
        &self.win[i..i + len]
    }

    fn literals(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        self.flush_copy();
        let i = (from - self.win_base) as usize;
        let bytes = &self.win[i..i + (to - from) as usize];
        match &mut self.coder {
            Coder::Writing(t) => self.bits.put_literals(&t.lit, bytes),
            Coder::Sizing {
                tokens, lit_freq, ..
            } => {
                for &b in bytes {
                    lit_freq[b as usize] += 1;
                }
                tokens.extend(bytes.iter().map(|&b| b as u32));
            }
        }
    }

    /// Writes a hinted line's value and its newline as literals and returns where the next
    /// line starts; `at` if no newline follows within a value's length (then
    /// [`HintedGzip::unhinted`] takes it). The value is what [`HintedGzip::unhinted`] would
    /// code the same way (it never starts a line), minus its search for line starts: ~1.5 % of
    /// the scrape's user instructions.
    #[inline]
    fn value(&mut self, at: u64) -> u64 {
        const LONGEST_VALUE: usize = 40;
        let i = (at - self.win_base) as usize;
        let end = (self.total_in - self.win_base) as usize;
        let rest = &self.win[i..end.min(i + LONGEST_VALUE)];
        match memchr::memchr(b'\n', rest) {
            Some(n) => {
                let next = at + n as u64 + 1;
                self.literals(at, next);
                next
            }
            None => at,
        }
    }

    /// Bytes without a hint (family headers, the machine and self-metrics): each line is
    /// compared with the line before it, and their common start is a copy.
    fn unhinted(&mut self, from: u64, to: u64) {
        let mut at = from;
        // The start of the line holding `at`, where known without scanning back: the text
        // after a hinted line's value belongs to that line.
        let mut line_start = self
            .prev_line
            .filter(|p| p.value_start == from)
            .map(|p| p.start);
        let mut prev_start = None;
        while at < to {
            let line_end = match memchr::memchr(b'\n', self.slice(at, (to - at) as usize)) {
                Some(i) => at + i as u64 + 1,
                None => to,
            };
            let copied = self.copy_from_previous_line(at, line_end, prev_start);
            if self.byte(at) == b'#' {
                self.comment_literals(at + copied, line_end);
            } else {
                self.literals(at + copied, line_end);
            }
            let starts_line = at == 0 || (at > self.win_base && self.byte(at - 1) == b'\n');
            prev_start = line_start.or(starts_line.then_some(at));
            line_start = None;
            at = line_end;
        }
    }

    /// [`HintedGzip::literals`] for (the rest of) a comment line: its bits from the cache.
    fn comment_literals(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        self.flush_copy();
        let Coder::Writing(t) = &self.coder else {
            return self.literals(from, to);
        };
        let i = (from - self.win_base) as usize;
        let bytes = &self.win[i..i + (to - from) as usize];
        let cache = &mut self.carry.comments;
        let key = hash_bytes(bytes);
        let known = cache
            .index
            .get(&key)
            .map(|&l| cache.lines[l as usize])
            .filter(|(span, _)| &cache.bytes[span.range()] == bytes);
        let run = match known {
            Some((_, run)) => run,
            None => {
                if cache.lines.len() >= MAX_COMMENT_LINES {
                    cache.clear();
                }
                let span = Span {
                    at: cache.bytes.len() as u32,
                    len: bytes.len() as u32,
                };
                cache.bytes.extend_from_slice(bytes);
                let run = LitRun {
                    words: cache.bits.len() as u32,
                    nbits: pack_literals(&t.lit, bytes, &mut cache.bits),
                };
                cache.index.insert(key, cache.lines.len() as u32);
                cache.lines.push((span, run));
                run
            }
        };
        self.bits.put_run(&cache.bits, run);
    }

    /// The length of the copy emitted for the start of `[at, end)` against the line before.
    /// `prev_start`: where that line starts, when the caller knows it (else found by scanning
    /// back).
    fn copy_from_previous_line(&mut self, at: u64, end: u64, prev_start: Option<u64>) -> u64 {
        if at == 0 || at <= self.win_base || self.byte(at - 1) != b'\n' {
            return 0;
        }
        let prev = match prev_start.filter(|&p| p >= self.win_base && p < at) {
            Some(p) => p,
            None => {
                let mut prev = at - 1;
                while prev > self.win_base && self.byte(prev - 1) != b'\n' {
                    prev -= 1;
                }
                prev
            }
        };
        let prev_len = at - prev;
        let common = common_len(
            self.slice(prev, prev_len as usize),
            self.slice(at, (end - at) as usize),
        );
        if self.copy_equal(at, prev, common) {
            common as u64
        } else {
            0
        }
    }

    fn line(&mut self, line: AbsHint) {
        let prev = self.prev_line.replace(line);
        // `name{`: the same as the line before within a family.
        let head = (line.prefix_start - line.start) as usize;
        let head_copied = match prev {
            Some(p) if p.prefix_start - p.start == head as u64 => {
                self.try_copy_long(line.start, p.start, head)
            }
            _ => false,
        };
        if !head_copied {
            self.literals(line.start, line.prefix_start);
        }

        self.prefix(line, prev);

        // Extra labels and `} `: compared with the line before.
        let mut at = line.prefix_end;
        if let Some(p) = prev.filter(|p| p.prefix_end >= self.win_base) {
            let mine = (line.value_start - line.prefix_end) as usize;
            let theirs = (p.value_start - p.prefix_end) as usize;
            let common = common_len(self.slice(p.prefix_end, theirs), self.slice(at, mine));
            if self.copy_equal(at, p.prefix_end, common) {
                at += common as u64;
            }
        }
        self.literals(at, line.value_start);
    }

    fn prefix(&mut self, line: AbsHint, prev: Option<AbsHint>) {
        let len = (line.prefix_end - line.prefix_start) as usize;
        let c = line.container as usize;
        if self.last_prefix.len() <= c {
            self.last_prefix.resize(c + 1, u64::MAX);
            self.slots.resize(c + 1, [(u32::MAX, 0); 2]);
            self.prefix_keys.resize(c + 1, 0);
        }
        let last = std::mem::replace(&mut self.last_prefix[c], line.prefix_start);
        // The same container's prefix in the previous family, if deflate can still reach it.
        if last != u64::MAX && self.try_copy_long(line.prefix_start, last, len) {
            return;
        }
        // Otherwise a copy script against the line before's prefix, made once per pair of
        // prefixes and kept across bodies.
        let script = prev
            .filter(|p| p.prefix_start >= self.win_base)
            .filter(|p| line.prefix_end - p.prefix_start <= WINDOW as u64)
            .map(|p| (p, self.script_for(p, line)))
            .filter(|&(p, s)| self.fits(s, p, line));
        match script {
            Some((p, s)) => self.run_script(s, p, line),
            None => self.literals(line.prefix_start, line.prefix_end),
        }
    }

    /// The script for the prefix pair (`p`, `line`): this container's slot, else the cache's
    /// (made now if new).
    fn script_for(&mut self, p: AbsHint, line: AbsHint) -> Script {
        let c = line.container as usize;
        let slots = self.slots[c];
        let id = match slots.iter().find(|s| s.0 == p.container) {
            Some(&(_, id)) => id,
            None => {
                let key = (self.prefix_key(p), self.prefix_key(line));
                let i = (p.prefix_start - self.win_base) as usize;
                let j = (line.prefix_start - self.win_base) as usize;
                let prev_len = (p.prefix_end - p.prefix_start) as usize;
                let len = (line.prefix_end - line.prefix_start) as usize;
                let id = self.carry.scripts.get_or_make(
                    key,
                    &mut self.carry.matcher,
                    &self.win[i..i + prev_len],
                    &self.win[j..j + len],
                );
                self.slots[c] = [(p.container, id), slots[0]];
                id
            }
        };
        self.carry.scripts.scripts[id as usize]
    }

    /// Whether both prefixes are exactly the bytes `script` was made for (the previous one
    /// is not compared again when the line before was found equal to the same stored bytes).
    fn fits(&mut self, script: Script, p: AbsHint, line: AbsHint) -> bool {
        let stored = &self.carry.scripts.prefix_bytes;
        let cur_len = (line.prefix_end - line.prefix_start) as usize;
        let prev_len = (p.prefix_end - p.prefix_start) as usize;
        if cur_len != script.cur.len as usize || prev_len != script.prev.len as usize {
            return false;
        }
        let prev_ok = self.checked == Some((p.prefix_start, script.prev))
            || self.slice(p.prefix_start, prev_len) == &stored[script.prev.range()];
        let ok = prev_ok && self.slice(line.prefix_start, cur_len) == &stored[script.cur.range()];
        self.checked = ok.then_some((line.prefix_start, script.cur));
        ok
    }

    /// Emits a prefix that [`HintedGzip::fits`] `script`: its copies unchecked (they held for
    /// these bytes when it was made), its literals as their coded bits.
    fn run_script(&mut self, script: Script, p: AbsHint, line: AbsHint) {
        for i in script.from as usize..script.to as usize {
            let op = self.carry.scripts.ops[i];
            let at = line.prefix_start + op.at as u64;
            let end = at + op.len as u64;
            match op.kind {
                OpKind::Literal => self.script_literals(i, script.cur, at, end),
                OpKind::FromPrev => {
                    self.push_copy(at, p.prefix_start + op.src as u64, op.len as usize)
                }
                OpKind::FromSelf => {
                    self.push_copy(at, line.prefix_start + op.src as u64, op.len as usize)
                }
            }
        }
    }

    /// The hash of a container's prefix, computed on its first line in this body.
    fn prefix_key(&mut self, line: AbsHint) -> u64 {
        let c = line.container as usize;
        if self.prefix_keys[c] == 0 {
            let len = (line.prefix_end - line.prefix_start) as usize;
            self.prefix_keys[c] = hash_bytes(self.slice(line.prefix_start, len));
        }
        self.prefix_keys[c]
    }

    /// Emits `[cur, cur+len)` as a copy of `[src, src+len)`, split into deflate's ≤ 258-byte
    /// matches, if deflate can reach it and the bytes really are equal (elementwise, which is
    /// also what an overlapping copy produces).
    fn try_copy_long(&mut self, cur: u64, src: u64, len: usize) -> bool {
        // Equality, not a common length: `bcmp` compares the ~100 bytes of a prefix in a few
        // vector loads.
        if !self.in_reach(cur, src, len) || self.slice(cur, len) != self.slice(src, len) {
            return false;
        }
        self.push_copy(cur, src, len);
        true
    }

    /// [`HintedGzip::try_copy_long`] for bytes the caller has found equal.
    fn copy_equal(&mut self, cur: u64, src: u64, len: usize) -> bool {
        if !self.in_reach(cur, src, len) {
            return false;
        }
        self.push_copy(cur, src, len);
        true
    }

    /// Whether deflate can copy `[cur, cur+len)` from `src`: a match long enough, from
    /// earlier input still in the window.
    fn in_reach(&self, cur: u64, src: u64, len: usize) -> bool {
        len >= MIN_MATCH && src < cur && cur - src <= WINDOW as u64 && src >= self.win_base
    }

    /// A copy known to be equal and in reach, merged with the pending one when it continues
    /// it at the same distance.
    fn push_copy(&mut self, cur: u64, src: u64, len: usize) {
        debug_assert!(self.in_reach(cur, src, len));
        debug_assert!(self.slice(cur, len) == self.slice(src, len));
        let dist = (cur - src) as usize;
        match &mut self.pending {
            Some(p) if p.end == cur && p.dist == dist => {
                p.end += len as u64;
                p.len += len;
            }
            _ => {
                self.flush_copy();
                self.pending = Some(PendingCopy {
                    end: cur + len as u64,
                    dist,
                    len,
                });
            }
        }
    }

    /// Writes the pending copy, if any. Inline: most calls (one before every literal run)
    /// find none, and the call was a measurable share of the compressor's instructions.
    #[inline]
    fn flush_copy(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.write_copy(pending);
        }
    }

    /// Writes a copy. The usual one (≤ 258 bytes, once the table is made) is one match token,
    /// written in line: it runs ~15 K times per scrape at 100 containers, and a call's saves
    /// and restores cost about what the token does (2 % of the scrape's user instructions).
    #[inline]
    fn write_copy(&mut self, copy: PendingCopy) {
        if let Coder::Writing(t) = &self.coder {
            if copy.len <= MAX_MATCH {
                let coded = t.distance(copy.dist - 1);
                t.copy_coded(&mut self.bits, copy.len - MIN_MATCH, coded);
                return;
            }
        }
        self.write_long_copy(copy);
    }

    /// Writes a copy, split into deflate's ≤ 258-byte matches. While writing, the distance
    /// is coded once for all of them.
    #[inline(never)]
    fn write_long_copy(&mut self, PendingCopy { dist, len, .. }: PendingCopy) {
        debug_assert!(len >= MIN_MATCH && (1..=WINDOW).contains(&dist));
        match &mut self.coder {
            Coder::Writing(t) => {
                let coded = t.distance(dist - 1);
                for_each_match(len, |take| {
                    t.copy_coded(&mut self.bits, take - MIN_MATCH, coded)
                });
            }
            Coder::Sizing {
                tokens,
                lit_freq,
                dist_freq,
            } => for_each_match(len, |take| {
                lit_freq[257 + LENGTH_CODES[take - MIN_MATCH].0 as usize] += 1;
                dist_freq[dist_code(dist - 1).0 as usize] += 1;
                tokens.push(MATCH_FLAG | ((take - MIN_MATCH) as u32) << 15 | (dist - 1) as u32);
            }),
        }
    }

    /// The literals of script op `op` at `[at, end)`, which hold the bytes of the stored
    /// prefix `cur` at the same place: their coded bits, coded on first use with this table.
    fn script_literals(&mut self, op: usize, cur: Span, at: u64, end: u64) {
        self.flush_copy();
        let Coder::Writing(t) = &self.coder else {
            return self.literals(at, end);
        };
        let cache = &mut self.carry.scripts;
        let mut run = cache.lits[op];
        if run.nbits == 0 {
            let from = cur.at as usize + cache.ops[op].at as usize;
            let bytes = &cache.prefix_bytes[from..from + (end - at) as usize];
            run = LitRun {
                words: cache.lit_bits.len() as u32,
                nbits: pack_literals(&t.lit, bytes, &mut cache.lit_bits),
            };
            cache.lits[op] = run;
        }
        self.bits.put_run(&cache.lit_bits, run);
    }

    /// Sizes the table on the tokens seen so far, writes the block header and those tokens,
    /// and from then on writes tokens as they come.
    fn start_writing(&mut self) {
        self.flush_copy();
        let Coder::Sizing {
            tokens,
            lit_freq,
            dist_freq,
        } = &self.coder
        else {
            return;
        };
        let (lit_len, dist_len) = Tables::lengths(lit_freq, dist_freq);
        let t = Tables::from_lengths(&lit_len, &dist_len);
        let bits = &mut self.bits;
        write_block_header(bits, &lit_len, &dist_len);
        for &tok in tokens {
            if tok & MATCH_FLAG == 0 {
                let (code, len) = t.lit[(tok & 0xff) as usize];
                bits.put(code as u64, len);
            } else {
                t.copy(bits, ((tok >> 15) & 0xff) as usize, (tok & 0x7fff) as usize);
            }
        }
        self.coder = Coder::Writing(Box::new(t));
        // Literals coded with the old table are coded again when next used.
        self.carry.scripts.forget_coded();
        self.carry.comments.clear();
        self.carry.table = Some(CarriedTable {
            lit_len,
            dist_len,
            bodies: 1,
        });
    }
}

/// Splits a copy of `len` ≥ 3 bytes into deflate's 3..=258-byte matches, never leaving a tail
/// shorter than a match.
#[inline]
fn for_each_match(mut len: usize, mut emit: impl FnMut(usize)) {
    while len > 0 {
        let take = if len <= MAX_MATCH {
            len
        } else if len - MAX_MATCH >= MIN_MATCH {
            MAX_MATCH
        } else {
            len - MIN_MATCH
        };
        emit(take);
        len -= take;
    }
}

/// How many leading bytes `a` and `b` share, a word at a time: the copies compared here are
/// mostly tens of bytes, where a call to `memcmp` costs more than the comparison.
fn common_len(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let word = |s: &[u8], i: usize| {
        s.get(i..i + 8)
            .and_then(|w| w.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let mut i = 0;
    while i + 8 <= n {
        let diff = word(a, i) ^ word(b, i);
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

fn ensure_two(freq: &mut [u32]) {
    let mut used = freq.iter().filter(|&&f| f > 0).count();
    for f in freq.iter_mut() {
        if used >= 2 {
            break;
        }
        if *f == 0 {
            *f = 1;
            used += 1;
        }
    }
}

/// Deflate length code for `len - 3`: (symbol − 257, extra bits, extra value).
const LENGTH_CODES: [(u8, u8, u8); 256] = {
    let mut t = [(0u8, 0u8, 0u8); 256];
    let mut l = 0;
    while l < 256 {
        t[l] = if l < 8 {
            (l as u8, 0, 0)
        } else if l == 255 {
            (28, 0, 0)
        } else {
            let nb = 31 - (l as u32).leading_zeros(); // floor(log2 l) ≥ 3
            let extra_bits = nb - 2;
            let sym = 4 * (nb - 1) + ((l as u32 >> extra_bits) & 3);
            (
                sym as u8,
                extra_bits as u8,
                (l as u32 & ((1 << extra_bits) - 1)) as u8,
            )
        };
        l += 1;
    }
    t
};

/// Deflate distance code for `dist - 1`: (symbol, extra bits, extra value).
fn dist_code(d: usize) -> (u32, u32, u32) {
    let d = d as u32;
    if d < 4 {
        return (d, 0, 0);
    }
    let nb = 31 - d.leading_zeros(); // floor(log2 d) ≥ 2
    let extra_bits = nb - 1;
    (
        2 * nb + ((d >> extra_bits) & 1),
        extra_bits,
        d & ((1 << extra_bits) - 1),
    )
}

/// Huffman code lengths for `freq` (zero frequency: no code), none longer than `max_len`.
fn code_lengths(freq: &[u32], max_len: u8, lens: &mut [u8]) {
    lens.iter_mut().for_each(|l| *l = 0);
    let mut syms: Vec<(u32, u16)> = freq
        .iter()
        .enumerate()
        .filter(|(_, &f)| f > 0)
        .map(|(s, &f)| (f, s as u16))
        .collect();
    match syms.len() {
        0 => return,
        1 => {
            lens[syms[0].1 as usize] = 1;
            return;
        }
        _ => {}
    }
    syms.sort_unstable();
    let n = syms.len();
    // Huffman's algorithm with two queues over the sorted leaves: nodes 0..n are leaves,
    // n.. are merges, made in non-decreasing weight order.
    let mut weight: Vec<u64> = syms.iter().map(|&(f, _)| f as u64).collect();
    let mut parent = vec![0usize; 2 * n - 1];
    let (mut leaf, mut merged) = (0usize, n);
    let pick = |weight: &Vec<u64>, leaf: &mut usize, merged: &mut usize, end: usize| {
        if *leaf < n && (*merged >= end || weight[*leaf] <= weight[*merged]) {
            *leaf += 1;
            *leaf - 1
        } else {
            *merged += 1;
            *merged - 1
        }
    };
    for next in n..2 * n - 1 {
        let a = pick(&weight, &mut leaf, &mut merged, next);
        let b = pick(&weight, &mut leaf, &mut merged, next);
        weight.push(weight[a] + weight[b]);
        parent[a] = next;
        parent[b] = next;
    }
    // Depths top-down: the root (last node) has depth 0, parents come after children.
    let mut depth = vec![0u32; 2 * n - 1];
    for i in (0..2 * n - 2).rev() {
        depth[i] = depth[parent[i]] + 1;
    }
    // Count codes per length, folding anything too long into `max_len`, then restore the
    // Kraft equality by lengthening the longest codes that can still grow.
    let max = max_len as usize;
    let mut count = vec![0u32; max + 1];
    for &d in &depth[..n] {
        count[(d as usize).min(max)] += 1;
    }
    let mut kraft: u64 = (1..=max).map(|l| (count[l] as u64) << (max - l)).sum();
    while kraft > 1 << max {
        count[max] -= 1;
        if let Some(l) = (1..max).rev().find(|&l| count[l] > 0) {
            count[l] -= 1;
            count[l + 1] += 2;
        }
        kraft -= 1;
    }
    // Shortest codes to the most frequent symbols.
    let mut l = 1;
    for &(_, sym) in syms.iter().rev() {
        while count[l] == 0 {
            l += 1;
        }
        lens[sym as usize] = l as u8;
        count[l] -= 1;
    }
}

/// Canonical codes (RFC 1951 §3.2.2), bit-reversed for the LSB-first bit order.
fn canonical_codes<const N: usize>(lens: &[u8; N]) -> [u16; N] {
    let mut count = [0u16; 16];
    for &l in lens {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; 16];
    let mut code = 0u16;
    for bits in 1..16 {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    let mut codes = [0u16; N];
    for (s, &l) in lens.iter().enumerate() {
        if l > 0 {
            codes[s] = next[l as usize].reverse_bits() >> (16 - l);
            next[l as usize] += 1;
        }
    }
    codes
}

/// The order the code-length code's lengths are written in.
const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// The body is one final block with dynamic Huffman codes.
fn write_block_header(bits: &mut BitWriter, lit_len: &[u8; 286], dist_len: &[u8; 30]) {
    bits.put(1, 1); // BFINAL
    bits.put(2, 2); // BTYPE: dynamic Huffman
    write_tables(bits, lit_len, dist_len);
}

/// Writes HLIT, HDIST, HCLEN and both tables, run-length coded.
fn write_tables(bits: &mut BitWriter, lit_len: &[u8; 286], dist_len: &[u8; 30]) {
    let hlit = lit_len
        .iter()
        .rposition(|&l| l > 0)
        .map_or(257, |i| (i + 1).max(257));
    let hdist = dist_len.iter().rposition(|&l| l > 0).map_or(1, |i| i + 1);
    let all: Vec<u8> = lit_len[..hlit]
        .iter()
        .chain(&dist_len[..hdist])
        .copied()
        .collect();
    // (symbol, extra value) pairs: 0..=15 a length, 16 repeat previous 3–6, 17 zeros 3–10,
    // 18 zeros 11–138.
    let mut rle: Vec<(u8, u8)> = Vec::with_capacity(all.len());
    let mut i = 0;
    while i < all.len() {
        let v = all[i];
        let mut run = all[i..].iter().take_while(|&&x| x == v).count();
        i += run;
        if v == 0 {
            while run >= 11 {
                let take = run.min(138);
                rle.push((18, (take - 11) as u8));
                run -= take;
            }
            if run >= 3 {
                rle.push((17, (run - 3) as u8));
                run = 0;
            }
        } else {
            rle.push((v, 0));
            run -= 1;
            while run >= 3 {
                let take = run.min(6);
                rle.push((16, (take - 3) as u8));
                run -= take;
            }
        }
        rle.extend(std::iter::repeat_n((v, 0), run));
    }
    let mut cl_freq = [0u32; 19];
    for &(s, _) in &rle {
        cl_freq[s as usize] += 1;
    }
    ensure_two(&mut cl_freq);
    let mut cl_len = [0u8; 19];
    code_lengths(&cl_freq, 7, &mut cl_len);
    let cl_codes = canonical_codes(&cl_len);
    let hclen = CL_ORDER
        .iter()
        .rposition(|&s| cl_len[s] > 0)
        .map_or(4, |i| (i + 1).max(4));

    bits.put((hlit - 257) as u64, 5);
    bits.put((hdist - 1) as u64, 5);
    bits.put((hclen - 4) as u64, 4);
    for &s in &CL_ORDER[..hclen] {
        bits.put(cl_len[s] as u64, 3);
    }
    for (s, extra) in rle {
        let s = s as usize;
        bits.put(cl_codes[s] as u64, cl_len[s] as u32);
        match s {
            16 => bits.put(extra as u64, 2),
            17 => bits.put(extra as u64, 3),
            18 => bits.put(extra as u64, 7),
            _ => {}
        }
    }
}

/// LSB-first bit output (RFC 1951 §3.1.1).
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// Appends the low `len` bits of `v` (`len` < 64: a whole match token at once; no bits
    /// above `len`).
    #[inline]
    fn put(&mut self, v: u64, len: u32) {
        let out = &mut self.out;
        // Whole words: a fixed-size append is a store, a variable one a call to memmove.
        push_bits(&mut self.acc, &mut self.n, v, len, |word| {
            out.extend_from_slice(&word.to_le_bytes())
        });
    }

    /// Appends the codes of `bytes` as literals, with the bit buffer in registers for the
    /// run (through `&mut self` it was loaded and stored again for every byte).
    #[inline]
    fn put_literals(&mut self, lit: &[(u32, u32); 256], bytes: &[u8]) {
        let (mut acc, mut n) = (self.acc, self.n);
        let out = &mut self.out;
        out.reserve(bytes.len() * 2 + 8);
        code_literals(lit, bytes, &mut acc, &mut n, |word| {
            out.extend_from_slice(&word.to_le_bytes())
        });
        self.acc = acc;
        self.n = n;
    }

    /// Appends a coded run kept in `store`.
    #[inline]
    fn put_run(&mut self, store: &[u64], run: LitRun) {
        let from = run.words as usize;
        self.put_words(
            &store[from..from + run.nbits.div_ceil(64) as usize],
            run.nbits,
        );
    }

    /// Appends `nbits` bits packed LSB-first in `words` (no bits set above `nbits`).
    #[inline]
    fn put_words(&mut self, words: &[u64], nbits: u32) {
        let full = (nbits / 64) as usize;
        for &w in &words[..full] {
            self.acc |= w << self.n;
            self.out.extend_from_slice(&self.acc.to_le_bytes());
            // `w >> (64 - n)`, which is 0 for n = 0 (a shift by 64 is not).
            self.acc = (w >> 1) >> (63 - self.n);
        }
        let rest = nbits % 64;
        if rest > 0 {
            let w = words[full];
            self.put(w & 0xffff_ffff, rest.min(32));
            if rest > 32 {
                self.put(w >> 32, rest - 32);
            }
        }
    }

    fn flush(&mut self) {
        let bytes = self.n.div_ceil(8);
        self.out
            .extend_from_slice(&self.acc.to_le_bytes()[..bytes as usize]);
        self.acc = 0;
        self.n = 0;
    }
}

/// A hash of a label prefix, never 0. Eight bytes at a time: it runs once per container per
/// body over ~200 bytes, and a collision only costs compression (copies are compared first).
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64 ^ bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    h | 1
}

impl ScriptCache {
    /// The script for `key`, matched now if it is not cached.
    fn get_or_make(
        &mut self,
        key: (u64, u64),
        matcher: &mut ScriptMatcher,
        prev: &[u8],
        cur: &[u8],
    ) -> u32 {
        let epoch = self.epoch;
        if let Some(&id) = self.index.get(&key) {
            self.scripts[id as usize].used = epoch;
            return id;
        }
        let from = self.ops.len() as u32;
        matcher.script(prev, cur, &mut self.ops);
        self.lits.resize(self.ops.len(), LitRun::default());
        let script = Script {
            from,
            to: self.ops.len() as u32,
            prev: self.intern(key.0, prev),
            cur: self.intern(key.1, cur),
            key,
            used: epoch,
        };
        let id = self.scripts.len() as u32;
        self.scripts.push(script);
        self.index.insert(key, id);
        id
    }

    /// Where `bytes`, whose hash is given, are stored: shared by the scripts of the same
    /// prefix. A script's spans must hold exactly the bytes its ops were made for, so bytes
    /// that differ from those stored under their hash (a collision, or hints that give one
    /// container index several prefixes) are stored apart.
    fn intern(&mut self, hash: u64, bytes: &[u8]) -> Span {
        if let Some(&span) = self.prefixes.get(&hash) {
            if self.prefix_bytes[span.range()] == *bytes {
                return span;
            }
        }
        let span = Span {
            at: self.prefix_bytes.len() as u32,
            len: bytes.len() as u32,
        };
        self.prefix_bytes.extend_from_slice(bytes);
        self.prefixes.entry(hash).or_insert(span);
        span
    }

    /// Drops the coded literals (the table they were coded with is gone).
    fn forget_coded(&mut self) {
        self.lits.fill(LitRun::default());
        self.lit_bits.clear();
    }

    /// Keeps only the scripts the latest body used, once the others take as much room as they
    /// do: containers come and go, and a script for a pair that no longer meets is never read.
    fn compact(&mut self) {
        let epoch = self.epoch;
        let live: usize = self
            .scripts
            .iter()
            .filter(|s| s.used == epoch)
            .map(|s| (s.to - s.from) as usize)
            .sum();
        if self.ops.len() < 1024 || self.ops.len() <= 2 * live {
            return;
        }
        let mut kept = ScriptCache {
            epoch,
            ..ScriptCache::default()
        };
        for s in self.scripts.iter().filter(|s| s.used == epoch) {
            let from = kept.ops.len() as u32;
            for i in s.from as usize..s.to as usize {
                kept.ops.push(self.ops[i]);
                let mut run = self.lits[i];
                if run.nbits > 0 {
                    let w = run.words as usize;
                    let words = run.nbits.div_ceil(64) as usize;
                    run.words = kept.lit_bits.len() as u32;
                    kept.lit_bits
                        .extend_from_slice(&self.lit_bits[w..w + words]);
                }
                kept.lits.push(run);
            }
            let script = Script {
                from,
                to: kept.ops.len() as u32,
                prev: kept.intern(s.key.0, &self.prefix_bytes[s.prev.range()]),
                cur: kept.intern(s.key.1, &self.prefix_bytes[s.cur.range()]),
                ..*s
            };
            kept.index.insert(s.key, kept.scripts.len() as u32);
            kept.scripts.push(script);
        }
        *self = kept;
    }
}

/// Codes `bytes` as literals into `out`, packed LSB-first; returns the number of bits.
fn pack_literals(lit: &[(u32, u32); 256], bytes: &[u8], out: &mut Vec<u64>) -> u32 {
    let (mut acc, mut n) = (0u64, 0u32);
    let start = out.len();
    code_literals(lit, bytes, &mut acc, &mut n, |word| out.push(word));
    let total = (out.len() - start) as u32 * 64 + n;
    if n > 0 {
        out.push(acc);
    }
    total
}

/// Codes `bytes` as literals onto a bit buffer holding `n` bits in `acc`, handing each word
/// it fills to `word`.
#[inline]
fn code_literals(
    lit: &[(u32, u32); 256],
    bytes: &[u8],
    acc: &mut u64,
    n: &mut u32,
    mut word: impl FnMut(u64),
) {
    for &b in bytes {
        let (code, len) = lit[b as usize];
        push_bits(acc, n, code as u64, len, &mut word);
    }
}

/// Appends the low `len` bits of `v` (`len` < 64, no bits above it) to a bit buffer holding
/// `n` bits in `acc`, handing it to `word` when it fills. The one bit-packing step of the
/// writer: match tokens, literal runs and cached runs all go through it.
#[inline(always)]
fn push_bits(acc: &mut u64, n: &mut u32, v: u64, len: u32, mut word: impl FnMut(u64)) {
    *acc |= v << *n;
    if *n + len >= 64 {
        word(*acc);
        // n ≥ 1 here (len < 64), so the shift is in 1..=63.
        *acc = v >> (64 - *n);
        *n = *n + len - 64;
    } else {
        *n += len;
    }
}

/// Finds how a prefix repeats the previous one (and itself): greedy longest matches through
/// a small hash-chain index, once per (previous, current) container pair.
#[derive(Default)]
struct ScriptMatcher {
    ctx: Vec<u8>,
    head: Vec<u32>,
    chain: Vec<u32>,
}

const HASH_BITS: u32 = 10;
const CHAIN_DEPTH: usize = 16;
const NONE: u32 = u32::MAX;

impl ScriptMatcher {
    fn hash(b: &[u8]) -> usize {
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    }

    /// Appends the ops covering `cur` in order.
    fn script(&mut self, prev: &[u8], cur: &[u8], ops: &mut Vec<ScriptOp>) {
        self.ctx.clear();
        self.ctx.extend_from_slice(prev);
        self.ctx.extend_from_slice(cur);
        self.head.clear();
        self.head.resize(1 << HASH_BITS, NONE);
        self.chain.clear();
        self.chain.resize(self.ctx.len(), NONE);
        let p = prev.len();
        let insert = |m: &mut Self, i: usize| {
            if i + 4 <= m.ctx.len() {
                let h = Self::hash(&m.ctx[i..]);
                m.chain[i] = m.head[h];
                m.head[h] = i as u32;
            }
        };
        for i in 0..p {
            insert(self, i);
        }
        let mut i = p;
        let mut lit_from = p;
        let end = self.ctx.len();
        while i < end {
            let (mut best_len, mut best_src) = (0, 0);
            if i + 4 <= end {
                let mut cand = self.head[Self::hash(&self.ctx[i..])];
                let mut depth = 0;
                while cand != NONE && depth < CHAIN_DEPTH {
                    let c = cand as usize;
                    // A copy from the previous prefix ends with it: in the body, other bytes
                    // follow it than this prefix.
                    let src_end = if c < p { p } else { end };
                    let len = common_len(&self.ctx[c..src_end], &self.ctx[i..end]);
                    if len > best_len {
                        best_len = len;
                        best_src = c;
                    }
                    cand = self.chain[c];
                    depth += 1;
                }
            }
            if best_len >= 4 {
                if lit_from < i {
                    ops.push(ScriptOp::literals(lit_from - p, i - lit_from));
                }
                let (kind, src) = if best_src < p {
                    (OpKind::FromPrev, best_src)
                } else {
                    (OpKind::FromSelf, best_src - p)
                };
                ops.push(ScriptOp {
                    at: (i - p) as u32,
                    len: best_len as u32,
                    src: src as u32,
                    kind,
                });
                for j in i..i + best_len {
                    insert(self, j);
                }
                i += best_len;
                lit_from = i;
            } else {
                insert(self, i);
                i += 1;
            }
        }
        if lit_from < end {
            ops.push(ScriptOp::literals(lit_from - p, end - lit_from));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    /// An exposition-shaped body and its hints, in chunks of about `chunk` bytes.
    fn body(containers: usize, families: usize, chunk: usize) -> Vec<(Vec<u8>, Vec<LineHint>)> {
        body_of(&(0..containers).collect::<Vec<_>>(), families, chunk)
    }

    /// [`body`] for the containers named by `ids` (hint indices are positions in `ids`, as the
    /// agent numbers its samples).
    fn body_of(ids: &[usize], families: usize, chunk: usize) -> Vec<(Vec<u8>, Vec<LineHint>)> {
        let prefixes: Vec<String> = ids
            .iter()
            .map(|&c| {
                let id = format!("{:016x}{:016x}", (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15), c * 7);
                format!("container=\"app\",id=\"/kubepods/burstable/pod{c:04}/{id}\",image=\"\",name=\"{id}\",namespace=\"ns\",pod=\"p-{}\"", c / 3)
            })
            .collect();
        let mut out = vec![(Vec::new(), Vec::new())];
        for f in 0..families {
            let (buf, _) = out.last_mut().expect("one");
            buf.extend_from_slice(
                format!("# HELP fam_{f} help\n# TYPE fam_{f} gauge\n").as_bytes(),
            );
            for (c, p) in prefixes.iter().enumerate() {
                let (buf, hints) = out.last_mut().expect("one");
                let start = buf.len() as u32;
                buf.extend_from_slice(format!("fam_{f}{{").as_bytes());
                let prefix_start = buf.len() as u32;
                buf.extend_from_slice(p.as_bytes());
                let prefix_end = buf.len() as u32;
                if f % 3 == 0 {
                    buf.extend_from_slice(b",cpu=\"total\"");
                }
                buf.extend_from_slice(b"} ");
                let value_start = buf.len() as u32;
                buf.extend_from_slice(format!("{}\n", c * f * 12345 + 7).as_bytes());
                hints.push(LineHint {
                    start,
                    prefix_start,
                    prefix_end,
                    value_start,
                    container: c as u32,
                });
                if buf.len() >= chunk {
                    out.push((Vec::new(), Vec::new()));
                }
            }
        }
        out.last_mut()
            .expect("one")
            .0
            .extend_from_slice(b"podstat_a{x=\"1\"} 1\npodstat_a{x=\"2\"} 2\n");
        out
    }

    fn compress(chunks: &[(Vec<u8>, Vec<LineHint>)]) -> (Vec<u8>, Vec<u8>) {
        let mut gz = HintedGzip::new();
        let mut plain = Vec::new();
        for (c, h) in chunks {
            gz.push(c, h);
            plain.extend_from_slice(c);
        }
        (gz.finish(), plain)
    }

    #[test]
    fn round_trips_an_exposition_in_and_beyond_the_window() {
        // 20 containers: the previous family is in the window; 400: it is not.
        for containers in [20, 400] {
            let (gz, plain) = compress(&body(containers, 12, 64 * 1024));
            assert_eq!(gunzip(&gz), plain, "{containers} containers");
            let mut miniz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut miniz, &plain).expect("vec");
            let miniz = miniz.finish().expect("vec").len();
            eprintln!(
                "{containers}: {} -> {} (miniz level 1: {miniz})",
                plain.len(),
                gz.len()
            );
            assert!(
                gz.len() * 10 <= miniz * 11,
                "within 10 % of miniz_oxide's size"
            );
        }
    }

    #[test]
    fn wrong_hints_cost_compression_not_correctness() {
        let mut chunks = body(50, 6, 16 * 1024);
        for (i, (_, hints)) in chunks.iter_mut().enumerate() {
            for (j, h) in hints.iter_mut().enumerate() {
                match (i + j) % 4 {
                    0 => h.container = (j % 3) as u32,
                    1 => h.prefix_end = h.prefix_end.saturating_sub(5),
                    2 => h.prefix_start += 1,
                    _ => {}
                }
            }
        }
        let (gz, plain) = compress(&chunks);
        assert_eq!(gunzip(&gz), plain);
    }

    fn compress_with(
        carry: GzipCarry,
        chunks: &[(Vec<u8>, Vec<LineHint>)],
    ) -> (Vec<u8>, GzipCarry) {
        let mut gz = HintedGzip::resume(carry);
        let mut plain = Vec::new();
        for (c, h) in chunks {
            gz.push(c, h);
            plain.extend_from_slice(c);
        }
        let (out, carry) = gz.finish_carry();
        assert_eq!(gunzip(&out), plain);
        (out, carry)
    }

    #[test]
    fn carried_state_gives_the_same_member_and_follows_changed_containers() {
        let first: Vec<usize> = (0..60).collect();
        // Some containers gone, new ones, and the rest in another order: indices now name
        // other prefixes than in the body before.
        let changed: Vec<usize> = (30..100).rev().collect();
        let (a, carry) = compress_with(GzipCarry::default(), &body_of(&first, 8, 16 * 1024));
        assert_eq!(carry.table.as_ref().map(|t| t.bodies), Some(1));
        let scripts_made = carry.scripts.index.len();
        assert!(
            scripts_made > 0,
            "a 60-container family is beyond the window"
        );
        let (_, carry) = compress_with(carry, &body_of(&changed, 8, 16 * 1024));
        assert!(
            carry.scripts.index.len() > scripts_made,
            "new pairs get scripts"
        );
        let (again, carry) = compress_with(carry, &body_of(&first, 8, 16 * 1024));
        // The carried table, scripts and coded literals make exactly what a fresh start made.
        assert_eq!(again, a);
        assert_eq!(carry.table.as_ref().map(|t| t.bodies), Some(3));
    }

    #[test]
    fn comment_lines_are_coded_once_per_table() {
        let families = 8;
        let chunks = body(20, families, 64 * 1024);
        let (first, carry) = compress_with(GzipCarry::default(), &chunks);
        // The first body sizes the table on its first chunk: nothing coded before it is kept.
        let (second, carry) = compress_with(carry, &chunks);
        assert_eq!(carry.comments.lines.len(), 2 * families);
        let (third, carry) = compress_with(carry, &chunks);
        assert_eq!(
            carry.comments.lines.len(),
            2 * families,
            "known lines are not added again"
        );
        assert_eq!(third, second, "cached bits are the bits coding them makes");
        assert_eq!(first.len(), second.len());
        // A new table forgets them: their bits were coded with the old one.
        let mut carry = carry;
        carry.table = None;
        let (_, carry) = compress_with(carry, &chunks);
        assert!(carry.comments.lines.is_empty());
    }

    #[test]
    fn a_carried_table_is_sized_again_after_resize_every_bodies() {
        let chunks = body(40, 3, 64 * 1024);
        let mut carry = GzipCarry::default();
        let mut seen = Vec::new();
        for _ in 0..RESIZE_EVERY + 2 {
            carry = compress_with(carry, &chunks).1;
            seen.push(carry.table.as_ref().map_or(0, |t| t.bodies));
        }
        let expected: Vec<u32> = (1..=RESIZE_EVERY).chain(1..=2).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn scripts_of_containers_gone_are_dropped() {
        let mut carry = GzipCarry::default();
        let mut most = 0;
        for round in 0..30 {
            // A new set of 150 containers every time: no script is ever used again.
            let ids: Vec<usize> = (round * 1000..round * 1000 + 150).collect();
            carry = compress_with(carry, &body_of(&ids, 3, 32 * 1024)).1;
            most = most.max(carry.scripts.ops.len());
            let s = &carry.scripts;
            assert_eq!(s.lits.len(), s.ops.len());
        }
        let one_body = carry.scripts.index.len();
        assert!(
            one_body <= 150,
            "only the latest body's scripts are kept: {one_body}"
        );
        assert!(
            most < 4 * 1024,
            "the arena stays bounded: {most} ops at most"
        );
    }

    #[test]
    fn empty_and_unhinted_input() {
        assert!(gunzip(&HintedGzip::new().finish()).is_empty());
        // Self-metrics: lines of a family share their start.
        let mut text = Vec::new();
        for f in ["duration_seconds", "success", "errors_total"] {
            text.extend_from_slice(
                format!("# HELP podstat_collector_{f} h\n# TYPE podstat_collector_{f} gauge\n")
                    .as_bytes(),
            );
            for c in [
                "cpu", "memory", "blkio", "process", "network", "oom", "pressure", "spec",
            ] {
                text.extend_from_slice(
                    format!(
                        "podstat_collector_{f}{{collector=\"{c}\"}} 0.000{}\n",
                        c.len()
                    )
                    .as_bytes(),
                );
            }
        }
        let mut gz = HintedGzip::new();
        gz.push(&text, &[]);
        let out = gz.finish();
        assert_eq!(gunzip(&out), text);
        assert!(
            out.len() * 2 < text.len(),
            "{} -> {}",
            text.len(),
            out.len()
        );
    }

    #[test]
    fn long_blocks_and_every_length_and_distance() {
        // Copies of every length 3..=258 at many distances, across several blocks.
        let mut text = Vec::new();
        let mut hints = Vec::new();
        let mut x: u32 = 1;
        while text.len() < 600_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = 3 + (x >> 8) as usize % 600;
            let start = text.len() as u32;
            text.extend_from_slice(b"m{");
            let prefix_start = text.len() as u32;
            for k in 0..len {
                text.push(b'a' + ((k * 7 + (x as usize >> 20) % 3) % 26) as u8);
            }
            let prefix_end = text.len() as u32;
            text.extend_from_slice(b"} ");
            let value_start = text.len() as u32;
            text.extend_from_slice(format!("{x}\n").as_bytes());
            hints.push(LineHint {
                start,
                prefix_start,
                prefix_end,
                value_start,
                container: x % 97,
            });
        }
        let mut gz = HintedGzip::new();
        gz.push(&text, &hints);
        assert_eq!(gunzip(&gz.finish()), text);
    }

    #[test]
    fn length_limited_codes_are_complete() {
        // Fibonacci frequencies make an unlimited Huffman code ~40 deep.
        let mut freq = [0u32; 286];
        let (mut a, mut b) = (1u32, 1u32);
        for f in freq.iter_mut().take(45) {
            *f = a;
            (a, b) = (b, a.saturating_add(b));
        }
        let mut lens = [0u8; 286];
        code_lengths(&freq, 15, &mut lens);
        assert!(lens.iter().all(|&l| l <= 15));
        let kraft: u64 = lens
            .iter()
            .filter(|&&l| l > 0)
            .map(|&l| 1u64 << (15 - l))
            .sum();
        assert_eq!(kraft, 1 << 15);
        assert!(lens[44] <= lens[0], "frequent symbols get shorter codes");
    }

    #[test]
    fn code_tables_match_rfc1951() {
        // Length 3 → 257, 10 → 264, 11 → 265 + 1 bit, 257 → 284 + 5 bits (30), 258 → 285.
        assert_eq!(LENGTH_CODES[0], (0, 0, 0));
        assert_eq!(LENGTH_CODES[7], (7, 0, 0));
        assert_eq!(LENGTH_CODES[8], (8, 1, 0));
        assert_eq!(LENGTH_CODES[254], (27, 5, 30));
        assert_eq!(LENGTH_CODES[255], (28, 0, 0));
        // Distance 1 → 0, 5 → 4 + 1 bit, 7 → 5, 32768 → 29 + 13 bits.
        assert_eq!(dist_code(0), (0, 0, 0));
        assert_eq!(dist_code(4), (4, 1, 0));
        assert_eq!(dist_code(6), (5, 1, 0));
        assert_eq!(dist_code(32767), (29, 13, 8191));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_and_hints_round_trip(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4000),
            raw in proptest::collection::vec((0u32..4000, 0u32..400, 0u32..400, 0u32..40, 0u32..8), 0..60),
            split in 0usize..4000,
        ) {
            let split = split.min(data.len());
            let mut hints: Vec<LineHint> = raw
                .iter()
                .map(|&(s, a, b, c, k)| LineHint { start: s, prefix_start: s + a, prefix_end: s + a + b, value_start: s + a + b + c, container: k })
                .collect();
            hints.sort_by_key(|h| h.start);
            let mut gz = HintedGzip::new();
            gz.push(&data[..split], &hints);
            gz.push(&data[split..], &hints);
            let (first, carry) = gz.finish_carry();
            proptest::prop_assert_eq!(gunzip(&first), data.clone());
            // And again with what the first body left: its table, scripts and coded literals.
            let mut gz = HintedGzip::resume(carry);
            gz.push(&data[split..], &hints);
            gz.push(&data[..split], &hints);
            let mut swapped = data[split..].to_vec();
            swapped.extend_from_slice(&data[..split]);
            proptest::prop_assert_eq!(gunzip(&gz.finish()), swapped);
        }
    }
}
