//! An invertible Bloom lookup table (Eppstein et al., "What's the Difference?", 2011) of row
//! hashes: how a cycle finds *which* rows of the differing buckets changed without reading
//! every `(key, hash)` of those buckets from the warehouse.
//!
//! Each row hash goes into one cell of each of [`K`] sub-tables of `m` cells; a cell keeps the
//! count, the XOR of the hashes and the XOR of a checksum of each hash. The warehouse computes
//! its table in SQL (one row per non-empty cell, see `source::iblt_sql`), we compute MySQL's
//! from its stored hashes here, subtract, and peel: a cell holding exactly one hash (count
//! ±1 and a matching checksum) names a row only the warehouse (+1) or only MySQL (−1) has;
//! removing it from its other cells frees more. The table is sized from the differing buckets,
//! so what is read scales with the number of changed rows, not with the bucket sizes. When
//! peeling stalls (more changes than the table can hold) the caller falls back to the key scan.
//!
//! Cell indices and checksums use only masks, logical shifts of non-negative values and a
//! product below 2^62, so BigQuery (whose `>>` does not extend the sign) and the emulator
//! (whose does) agree with this code.

/// Sub-tables (cells per hash).
pub const K: usize = 3;

/// Largest sub-table: indices come from 20-bit slices of the hash.
pub const MAX_PER_TABLE: u32 = 1 << 20;

const LOW63: i64 = i64::MAX;
const SLICE: u64 = (1 << 20) - 1;

/// The 63 low bits of a hash as a non-negative number.
fn low63(hash: i64) -> u64 {
    (hash & LOW63) as u64
}

/// The cell of `hash` in each sub-table, as global cell numbers in `0..K*m`.
pub fn cells_of(hash: i64, m: u32) -> [u32; K] {
    let u = low63(hash);
    let m64 = u64::from(m.max(1));
    let slices = [u & SLICE, (u >> 21) & SLICE, (u >> 42) & SLICE];
    let mut out = [0u32; K];
    for (i, s) in slices.iter().enumerate() {
        // i < K and s % m < m <= 2^20: fits in u32.
        out[i] = (i as u32) * m.max(1) + (s % m64) as u32;
    }
    out
}

/// A checksum of a hash, independent of its cells (a non-linear mix, so that XORs of several
/// hashes don't pass for one), with the sign bit (which the cells don't see) in bit 62: the
/// product stays below 2^61.
pub fn check_of(hash: i64) -> u64 {
    let u = low63(hash);
    let sign = if hash < 0 { 1 << 62 } else { 0 };
    (u >> 33) * (u & 0x7FFF_FFFF) + sign
}

/// One cell: how many hashes, their XOR and the XOR of their checksums. Counts are signed:
/// after a subtraction they are warehouse minus MySQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    pub count: i64,
    pub xor: u64,
    pub check: u64,
}

impl Cell {
    fn is_empty(&self) -> bool {
        self.count == 0 && self.xor == 0 && self.check == 0
    }
}

/// An IBLT of `K * m` cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iblt {
    m: u32,
    cells: Vec<Cell>,
}

/// The symmetric difference of two sets of row hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    /// Hashes only the warehouse has (new and changed rows).
    pub warehouse_only: Vec<i64>,
    /// Hashes only MySQL has (deleted rows and old versions of changed ones).
    pub mysql_only: Vec<i64>,
}

/// Why a difference could not be read out of the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the difference is too large for {cells} cells ({left} cells left undecoded)")]
    TooManyDifferences { cells: usize, left: usize },
    #[error("warehouse cell {cell} is out of range for {cells} cells")]
    CellOutOfRange { cell: u64, cells: usize },
}

impl Iblt {
    /// An empty table with `m` cells per sub-table (clamped to `1..=MAX_PER_TABLE`).
    pub fn new(m: u32) -> Iblt {
        let m = m.clamp(1, MAX_PER_TABLE);
        Iblt {
            m,
            cells: vec![Cell::default(); K * m as usize],
        }
    }

    /// Cells per sub-table.
    pub fn per_table(&self) -> u32 {
        self.m
    }

    /// Adds one hash.
    pub fn insert(&mut self, hash: i64) {
        self.toggle(hash, 1);
    }

    fn toggle(&mut self, hash: i64, sign: i64) {
        let check = check_of(hash);
        for c in cells_of(hash, self.m) {
            let cell = &mut self.cells[c as usize];
            cell.count += sign;
            cell.xor ^= hash as u64;
            cell.check ^= check;
        }
    }

    /// A table from the warehouse's non-empty cells: `(cell, count, xor, check)`.
    pub fn from_cells(
        m: u32,
        rows: impl IntoIterator<Item = (u64, i64, u64, u64)>,
    ) -> Result<Iblt, DecodeError> {
        let mut t = Iblt::new(m);
        let n = t.cells.len();
        for (cell, count, xor, check) in rows {
            let slot = usize::try_from(cell)
                .ok()
                .filter(|c| *c < n)
                .ok_or(DecodeError::CellOutOfRange { cell, cells: n })?;
            t.cells[slot] = Cell { count, xor, check };
        }
        Ok(t)
    }

    /// Peels `self − other` (self: the warehouse, other: MySQL, both of the same size).
    pub fn difference(&self, other: &Iblt) -> Result<Difference, DecodeError> {
        let mut cells: Vec<Cell> = self
            .cells
            .iter()
            .zip(&other.cells)
            .map(|(a, b)| Cell {
                count: a.count - b.count,
                xor: a.xor ^ b.xor,
                check: a.check ^ b.check,
            })
            .collect();
        let m = self.m;
        let pure = |cells: &[Cell], i: usize| -> Option<(i64, i64)> {
            let c = cells[i];
            if c.count != 1 && c.count != -1 {
                return None;
            }
            let hash = c.xor as i64;
            (check_of(hash) == c.check && cells_of(hash, m).contains(&(i as u32)))
                .then_some((hash, c.count))
        };
        let mut out = Difference::default();
        let mut queue: Vec<usize> = (0..cells.len())
            .filter(|i| pure(&cells, *i).is_some())
            .collect();
        while let Some(i) = queue.pop() {
            let Some((hash, sign)) = pure(&cells, i) else {
                continue;
            };
            if sign > 0 {
                out.warehouse_only.push(hash);
            } else {
                out.mysql_only.push(hash);
            }
            let check = check_of(hash);
            for c in cells_of(hash, m) {
                let cell = &mut cells[c as usize];
                cell.count -= sign;
                cell.xor ^= hash as u64;
                cell.check ^= check;
                if pure(&cells, c as usize).is_some() {
                    queue.push(c as usize);
                }
            }
        }
        let left = cells.iter().filter(|c| !c.is_empty()).count();
        if left > 0 {
            return Err(DecodeError::TooManyDifferences {
                cells: cells.len(),
                left,
            });
        }
        out.warehouse_only.sort_unstable();
        out.mysql_only.sort_unstable();
        Ok(out)
    }
}

/// Cells per sub-table for an expected difference of `expected` hashes: about twice the
/// expected size in all (peeling with 3 sub-tables succeeds reliably above ~1.3x).
pub fn per_table_for(expected: u64) -> u32 {
    let total = expected.saturating_mul(2).saturating_add(30);
    u32::try_from(total.div_ceil(K as u64))
        .unwrap_or(MAX_PER_TABLE)
        .clamp(8, MAX_PER_TABLE)
}

/// A lower bound of the symmetric difference in the given buckets, from both sides' counts:
/// a bucket whose counts differ by d holds at least d differing hashes, one whose counts agree
/// (but whose XOR differs) at least two (a changed row: old and new hash).
pub fn expected_difference(counts: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    counts
        .into_iter()
        .map(|(w, m)| match w.abs_diff(m) {
            0 => 2,
            d => d,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random hashes (splitmix64), negative ones included.
    fn hashes(seed: u64, n: usize) -> Vec<i64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as i64
            })
            .collect()
    }

    fn table(m: u32, hs: &[i64]) -> Iblt {
        let mut t = Iblt::new(m);
        for h in hs {
            t.insert(*h);
        }
        t
    }

    #[test]
    fn cells_fall_one_in_each_sub_table() {
        for h in hashes(1, 1000)
            .into_iter()
            .chain([0, -1, i64::MIN, i64::MAX])
        {
            let cells = cells_of(h, 37);
            for (i, c) in cells.iter().enumerate() {
                assert!(
                    (i as u32 * 37..(i as u32 + 1) * 37).contains(c),
                    "{h}: {cells:?}"
                );
            }
        }
    }

    #[test]
    fn the_difference_of_two_large_sets_is_found_exactly() {
        let common = hashes(2, 50_000);
        let only_w = hashes(3, 40);
        let only_m = hashes(4, 60);
        let m = per_table_for(100);
        let w = table(m, &[common.clone(), only_w.clone()].concat());
        let my = table(m, &[common, only_m.clone()].concat());
        let d = w.difference(&my).expect("decodes");
        let mut ow = only_w;
        ow.sort_unstable();
        let mut om = only_m;
        om.sort_unstable();
        assert_eq!(d.warehouse_only, ow);
        assert_eq!(d.mysql_only, om);
    }

    #[test]
    fn equal_sets_have_no_difference() {
        let hs = hashes(5, 1000);
        let d = table(16, &hs).difference(&table(16, &hs)).expect("decodes");
        assert_eq!(d, Difference::default());
    }

    #[test]
    fn a_difference_too_large_for_the_table_is_an_error_not_a_wrong_answer() {
        let w = table(8, &hashes(6, 500));
        let my = Iblt::new(8);
        assert!(matches!(
            w.difference(&my),
            Err(DecodeError::TooManyDifferences { .. })
        ));
    }

    #[test]
    fn cells_read_back_from_rows_equal_the_built_table() {
        let hs = hashes(7, 300);
        let built = table(64, &hs);
        let rows: Vec<(u64, i64, u64, u64)> = built
            .cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.count != 0)
            .map(|(i, c)| (i as u64, c.count, c.xor, c.check))
            .collect();
        assert_eq!(Iblt::from_cells(64, rows).expect("in range"), built);
        assert!(matches!(
            Iblt::from_cells(64, [(3 * 64, 1, 1, 1)]),
            Err(DecodeError::CellOutOfRange { .. })
        ));
    }

    #[test]
    fn the_checksum_is_not_linear() {
        // XOR of two hashes must not pass for a single hash with the XORed checksum.
        let hs = hashes(8, 200);
        for pair in hs.chunks(2) {
            let (a, b) = (pair[0], pair[1]);
            assert_ne!(check_of(a) ^ check_of(b), check_of(a ^ b));
        }
    }

    #[test]
    fn hashes_differing_only_in_the_sign_bit_have_different_checksums() {
        for h in hashes(10, 100) {
            assert_ne!(check_of(h), check_of(h ^ i64::MIN), "{h}");
            assert_eq!(cells_of(h, 97), cells_of(h ^ i64::MIN, 97));
        }
    }

    #[test]
    fn sizing_grows_with_the_expected_difference() {
        assert_eq!(per_table_for(0), 10);
        assert!(per_table_for(1500) as u64 * K as u64 >= 3000);
        assert_eq!(per_table_for(u64::MAX), MAX_PER_TABLE);
        assert_eq!(expected_difference([(10, 10), (10, 12), (5, 2)]), 2 + 2 + 3);
    }
}
