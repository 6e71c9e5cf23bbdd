//! A staged Parquet file read in place, by ranged GETs (`docs/sync.md#load`): nothing is
//! copied to local disk, so neither `/tmp` space nor a SIGKILL matters. The Parquet reader
//! asks for footers, page headers and pages at offsets; they are served from aligned 1 MiB
//! blocks fetched on demand and kept in a small least-recently-used cache, so that each
//! column's reader, moving forward through its own column chunk, mostly finds its next page
//! already fetched. Memory stays bounded by the cache plus one page.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

/// Bytes per block (one ranged GET, unless a larger page needs more).
const BLOCK: u64 = 1 << 20;
/// Blocks kept at least; a file with more columns keeps two per column (each column's reader
/// moves through its own chunk, so fewer would evict every block before its next page).
const CACHED_BLOCKS: usize = 32;

/// A staged file read by ranged GETs. Cheap to clone (shared cache).
#[derive(Clone)]
pub(crate) struct RangedFile {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    rt: tokio::runtime::Handle,
    /// Most recently used last: (block index, bytes).
    cache: Mutex<VecDeque<(u64, Bytes)>>,
    /// Blocks the cache keeps ([`RangedFile::keep_blocks_for`]).
    capacity: std::sync::atomic::AtomicUsize,
    /// Ranged GETs made so far (tests, logs).
    gets: std::sync::atomic::AtomicU64,
}

impl RangedFile {
    /// Opens `path`: one HEAD for its size.
    pub(crate) fn open(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        rt: &tokio::runtime::Handle,
    ) -> Result<RangedFile, String> {
        let meta = rt.block_on(store.head(path)).map_err(|e| e.to_string())?;
        Ok(RangedFile {
            inner: Arc::new(Inner {
                store: store.clone(),
                path: path.clone(),
                size: meta.size,
                rt: rt.clone(),
                cache: Mutex::new(VecDeque::new()),
                capacity: std::sync::atomic::AtomicUsize::new(CACHED_BLOCKS),
                gets: Default::default(),
            }),
        })
    }

    /// Sizes the cache for a file of `columns` columns (read from its footer).
    pub(crate) fn keep_blocks_for(&self, columns: usize) {
        self.inner.capacity.store(
            CACHED_BLOCKS.max(2 * columns),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Ranged GETs made so far.
    #[cfg(test)]
    pub(crate) fn gets(&self) -> u64 {
        self.inner.gets.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn fetch(&self, start: u64, end: u64) -> Result<Bytes, ParquetError> {
        self.inner
            .gets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .rt
            .block_on(self.inner.store.get_range(&self.inner.path, start..end))
            .map_err(|e| ParquetError::External(Box::new(e)))
    }

    /// Block `i`, from the cache or fetched (evicting the least recently used).
    fn block(&self, i: u64) -> Result<Bytes, ParquetError> {
        {
            let mut cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(pos) = cache.iter().position(|(b, _)| *b == i) {
                let hit = cache.remove(pos).unwrap_or_default();
                cache.push_back(hit.clone());
                return Ok(hit.1);
            }
        }
        let start = i * BLOCK;
        let bytes = self.fetch(start, (start + BLOCK).min(self.inner.size))?;
        let mut cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
        let capacity = self
            .inner
            .capacity
            .load(std::sync::atomic::Ordering::Relaxed);
        while cache.len() >= capacity {
            cache.pop_front();
        }
        cache.push_back((i, bytes.clone()));
        Ok(bytes)
    }

    /// `length` bytes from `start`: from cached blocks, or one GET when the range spans more
    /// than a few blocks (a large page is read once, not cached).
    fn range(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        let end = start
            .checked_add(length as u64)
            .filter(|e| *e <= self.inner.size)
            .ok_or_else(|| {
                ParquetError::EOF(format!(
                    "range {start}+{length} past the end of {} ({} bytes)",
                    self.inner.path, self.inner.size
                ))
            })?;
        if length == 0 {
            return Ok(Bytes::new());
        }
        let (first, last) = (start / BLOCK, (end - 1) / BLOCK);
        if first == last {
            let b = self.block(first)?;
            let off = (start - first * BLOCK) as usize;
            return Ok(b.slice(off..off + length));
        }
        if last - first >= 4 {
            return self.fetch(start, end);
        }
        let mut out = BytesMut::with_capacity(length);
        for i in first..=last {
            let b = self.block(i)?;
            let from = start.max(i * BLOCK) - i * BLOCK;
            let to = end.min((i + 1) * BLOCK) - i * BLOCK;
            out.extend_from_slice(&b[from as usize..to as usize]);
        }
        Ok(out.freeze())
    }
}

impl Length for RangedFile {
    fn len(&self) -> u64 {
        self.inner.size
    }
}

impl ChunkReader for RangedFile {
    type T = RangedRead;

    fn get_read(&self, start: u64) -> Result<RangedRead, ParquetError> {
        Ok(RangedRead {
            file: self.clone(),
            pos: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.range(start, length)
    }
}

/// A `Read` from an offset of a [`RangedFile`], block by block (page headers are read so).
pub(crate) struct RangedRead {
    file: RangedFile,
    pos: u64,
}

impl Read for RangedRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let size = self.file.inner.size;
        if self.pos >= size || out.is_empty() {
            return Ok(0);
        }
        let i = self.pos / BLOCK;
        let block = self.file.block(i).map_err(std::io::Error::other)?;
        let off = (self.pos - i * BLOCK) as usize;
        let n = out.len().min(block.len() - off);
        out[..n].copy_from_slice(&block[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;

    /// A Parquet file of `groups` row groups of `rows` rows: `id` 0.., `name` "row <id> …".
    fn parquet_file(groups: i64, rows: i64) -> Vec<u8> {
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(
                "message t { required int64 id; required binary name (UTF8); }",
            )
            .unwrap(),
        );
        let props = Arc::new(WriterProperties::builder().build());
        let mut out = Vec::new();
        let mut w = SerializedFileWriter::new(&mut out, schema, props).unwrap();
        for g in 0..groups {
            let ids: Vec<i64> = (g * rows..(g + 1) * rows).collect();
            let names: Vec<ByteArray> = ids
                .iter()
                .map(|i| {
                    ByteArray::from(format!("row {i} {}", "x".repeat((i % 50) as usize)).as_str())
                })
                .collect();
            let mut rg = w.next_row_group().unwrap();
            let mut c = rg.next_column().unwrap().unwrap();
            c.typed::<Int64Type>()
                .write_batch(&ids, None, None)
                .unwrap();
            c.close().unwrap();
            let mut c = rg.next_column().unwrap().unwrap();
            c.typed::<ByteArrayType>()
                .write_batch(&names, None, None)
                .unwrap();
            c.close().unwrap();
            rg.close().unwrap();
        }
        w.close().unwrap();
        out
    }

    #[test]
    fn reads_every_row_in_place_with_few_ranged_gets() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let bytes = parquet_file(3, 60_000);
        let size = bytes.len() as u64;
        assert!(size > 3 * BLOCK, "the file spans several blocks: {size}");
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("run/t/20260101/000000000000.parquet");
        rt.block_on(store.put(&path, bytes.into())).unwrap();

        let file = RangedFile::open(&store, &path, rt.handle()).unwrap();
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(file.clone()).unwrap();
        let rows = parquet::record::reader::RowIter::from_file_into(Box::new(reader));
        let (mut n, mut sum) = (0i64, 0i64);
        for row in rows {
            let row = row.unwrap();
            use parquet::record::RowAccessor;
            sum += row.get_long(0).unwrap();
            assert!(row.get_string(1).unwrap().starts_with("row "));
            n += 1;
        }
        assert_eq!(n, 180_000);
        assert_eq!(sum, (0..180_000i64).sum::<i64>());
        // About one GET per block, whatever the number of pages.
        let blocks = size.div_ceil(BLOCK);
        assert!(
            file.gets() <= 2 * blocks + 4,
            "{} GETs for {blocks} blocks",
            file.gets()
        );
    }

    /// A Parquet file of one row group of `rows` rows and `columns` INT64 columns.
    fn wide_file(columns: usize, rows: i64) -> Vec<u8> {
        let fields: Vec<String> = (0..columns)
            .map(|i| format!("required int64 c{i};"))
            .collect();
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(&format!(
                "message t {{ {} }}",
                fields.join(" ")
            ))
            .unwrap(),
        );
        let props = Arc::new(WriterProperties::builder().build());
        let mut out = Vec::new();
        let mut w = SerializedFileWriter::new(&mut out, schema, props).unwrap();
        let mut rg = w.next_row_group().unwrap();
        for c in 0..columns as i64 {
            // Values that don't compress: each column chunk spans several blocks.
            let values: Vec<i64> = (0..rows)
                .map(|r| (r * 0x9E37_79B9 + c).wrapping_mul(0x5851_F42D_4C95_7F2D))
                .collect();
            let mut col = rg.next_column().unwrap().unwrap();
            col.typed::<Int64Type>()
                .write_batch(&values, None, None)
                .unwrap();
            col.close().unwrap();
        }
        rg.close().unwrap();
        w.close().unwrap();
        out
    }

    #[test]
    fn a_table_wider_than_the_least_cache_keeps_a_block_per_column() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let bytes = wide_file(48, 200_000);
        let size = bytes.len() as u64;
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("wide.parquet");
        rt.block_on(store.put(&path, bytes.into())).unwrap();
        let mut cursor = crate::readers::RowCursor::new(&store, std::slice::from_ref(&path));
        let mut n = 0;
        while cursor.next_row(rt.handle()).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 200_000);
        // Read through RowCursor (the loader's path): about one GET per block, not one per
        // page as a cache smaller than the column count would give.
        let file = RangedFile::open(&store, &path, rt.handle()).unwrap();
        file.keep_blocks_for(48);
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(file.clone()).unwrap();
        let rows = parquet::record::reader::RowIter::from_file_into(Box::new(reader));
        assert_eq!(rows.count(), 200_000);
        let blocks = size.div_ceil(BLOCK);
        assert!(
            file.gets() <= 2 * blocks + 4,
            "{} GETs for {blocks} blocks",
            file.gets()
        );
    }

    #[test]
    fn a_range_past_the_end_is_an_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("f.parquet");
        rt.block_on(store.put(&path, Bytes::from_static(b"not parquet").into()))
            .unwrap();
        let file = RangedFile::open(&store, &path, rt.handle()).unwrap();
        assert!(file.get_bytes(5, 100).is_err());
        assert_eq!(&file.get_bytes(4, 7).unwrap()[..], b"parquet");
        let err = parquet::file::serialized_reader::SerializedFileReader::new(file)
            .err()
            .unwrap();
        assert!(!err.to_string().is_empty());
    }
}
