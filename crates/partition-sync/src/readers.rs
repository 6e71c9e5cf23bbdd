//! Readers of the staged files a partition was exported to (`docs/sync.md#export`), each
//! yielding the file's rows as JSON objects: newline-delimited JSON streamed one chunk plus one
//! line at a time, or Parquet read in place by ranged GETs and row by row, its values put in
//! the exported JSON's form. Memory stays bounded whatever the file's size
//! (`docs/sync.md#load`).

use std::sync::Arc;

use base64::Engine as _;
use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStore;

use crate::ranged::RangedFile;

/// The rows of one staged file: newline-delimited JSON (streamed) or Parquet (by extension).
pub(crate) enum RowReader {
    Json(LineReader),
    Parquet(ParquetRows),
}

impl RowReader {
    pub(crate) fn open(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        rt: &tokio::runtime::Handle,
    ) -> Result<RowReader, String> {
        if path.extension() == Some("parquet") {
            Ok(RowReader::Parquet(ParquetRows::open(store, path, rt)?))
        } else {
            Ok(RowReader::Json(LineReader::open(store, path, rt)?))
        }
    }

    pub(crate) fn next_row(
        &mut self,
        rt: &tokio::runtime::Handle,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
        match self {
            RowReader::Json(lines) => match lines.next_line(rt)? {
                None => Ok(None),
                Some(line) => serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| format!("line is not a JSON object: {e}")),
            },
            RowReader::Parquet(rows) => rows.next_row(),
        }
    }
}

/// Where a load writes and which of the partition's rows it takes.
pub(crate) struct Chunk<'a> {
    /// The table written, unquoted (the target, or its shadow: `docs/sync.md#exchange`).
    pub(crate) into: &'a str,
    /// The partition's rows, read on from where the previous chunk stopped.
    pub(crate) rows: &'a Arc<std::sync::Mutex<RowCursor>>,
    /// At most this many rows (`None`: all that are left).
    pub(crate) limit: Option<u64>,
    /// Rows of the partition before this chunk (to name a rejected row's key).
    pub(crate) offset: u64,
}

/// The rows of a partition's staged files in order, read across calls: a load takes them in
/// chunks (`docs/sync.md#exchange`) or all at once.
pub(crate) struct RowCursor {
    store: Arc<dyn ObjectStore>,
    files: Vec<Path>,
    next: usize,
    current: Option<(Path, RowReader)>,
}

/// A row of a staged file, as its JSON object.
pub(crate) type Row = serde_json::Map<String, serde_json::Value>;

impl RowCursor {
    pub(crate) fn new(store: &Arc<dyn ObjectStore>, files: &[Path]) -> RowCursor {
        RowCursor {
            store: store.clone(),
            files: files.to_vec(),
            next: 0,
            current: None,
        }
    }

    /// The store the files are read from.
    pub(crate) fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The next row, or `None` after the last file's last row. An error names the file.
    pub(crate) fn next_row(
        &mut self,
        rt: &tokio::runtime::Handle,
    ) -> Result<Option<Row>, (Path, String)> {
        loop {
            if self.current.is_none() {
                let Some(file) = self.files.get(self.next).cloned() else {
                    return Ok(None);
                };
                self.next += 1;
                let reader =
                    RowReader::open(&self.store, &file, rt).map_err(|m| (file.clone(), m))?;
                self.current = Some((file, reader));
            }
            if let Some((file, reader)) = self.current.as_mut() {
                match reader.next_row(rt) {
                    Ok(Some(row)) => return Ok(Some(row)),
                    Ok(None) => self.current = None,
                    Err(m) => return Err((file.clone(), m)),
                }
            }
        }
    }
}

/// A Parquet file read in place by ranged GETs ([`RangedFile`]), row by row: memory stays
/// bounded by a few blocks and a row group's pages, whatever the file's size, and nothing is
/// written to local disk.
pub(crate) struct ParquetRows {
    rows: parquet::record::reader::RowIter<'static>,
}

impl ParquetRows {
    fn open(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        rt: &tokio::runtime::Handle,
    ) -> Result<ParquetRows, String> {
        let file = RangedFile::open(store, path, rt)?;
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(file.clone())
            .map_err(|e| format!("not a Parquet file: {e}"))?;
        use parquet::file::reader::FileReader;
        file.keep_blocks_for(
            reader
                .metadata()
                .file_metadata()
                .schema_descr()
                .num_columns(),
        );
        Ok(ParquetRows {
            rows: parquet::record::reader::RowIter::from_file_into(Box::new(reader)),
        })
    }

    fn next_row(&mut self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
        match self.rows.next() {
            None => Ok(None),
            Some(Err(e)) => Err(format!("Parquet: {e}")),
            Some(Ok(row)) => Ok(Some(
                row.get_column_iter()
                    .map(|(name, field)| (name.clone(), parquet_value(field)))
                    .collect(),
            )),
        }
    }
}

/// A Parquet value in the form the exported JSON has (see `Column::export_expr`).
fn parquet_value(field: &parquet::record::Field) -> serde_json::Value {
    use parquet::record::Field;
    use serde_json::Value as J;
    match field {
        Field::Null => J::Null,
        Field::Bool(b) => J::Bool(*b),
        Field::Byte(v) => J::from(*v),
        Field::Short(v) => J::from(*v),
        Field::Int(v) => J::from(*v),
        Field::Long(v) => J::from(*v),
        Field::UByte(v) => J::from(*v),
        Field::UShort(v) => J::from(*v),
        Field::UInt(v) => J::from(*v),
        Field::ULong(v) => J::from(*v),
        Field::Float(v) => serde_json::Number::from_f64(f64::from(*v))
            .map(J::Number)
            .unwrap_or_else(|| J::String(v.to_string())),
        Field::Double(v) => serde_json::Number::from_f64(*v)
            .map(J::Number)
            .unwrap_or_else(|| J::String(v.to_string())),
        Field::Str(s) => J::String(s.clone()),
        Field::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b.data())),
        Field::Date(days) => chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.checked_add_signed(chrono::Duration::days(i64::from(*days))))
            .map(|d| J::String(d.format("%Y-%m-%d").to_string()))
            .unwrap_or(J::Null),
        Field::TimestampMicros(us) => J::from(*us),
        Field::TimestampMillis(ms) => J::from(ms.saturating_mul(1000)),
        other => J::String(other.to_string()),
    }
}

/// Reads newline-delimited records from one object as a stream: memory stays at one chunk
/// plus one line.
pub(crate) struct LineReader {
    stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    start: usize,
    done: bool,
}

impl LineReader {
    fn open(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        rt: &tokio::runtime::Handle,
    ) -> Result<LineReader, String> {
        let result = rt.block_on(store.get(path)).map_err(|e| e.to_string())?;
        Ok(LineReader {
            stream: result.into_stream(),
            buf: Vec::new(),
            start: 0,
            done: false,
        })
    }

    fn next_line(&mut self, rt: &tokio::runtime::Handle) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(nl) = self.buf[self.start..].iter().position(|b| *b == b'\n') {
                let line = self.buf[self.start..self.start + nl].to_vec();
                self.start += nl + 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.done {
                let rest = self.buf[self.start..].to_vec();
                self.start = self.buf.len();
                return Ok(if rest.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    Some(rest)
                });
            }
            // Compact before reading more, so the buffer holds at most one chunk and a line.
            self.buf.drain(..self.start);
            self.start = 0;
            match rt.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(e.to_string()),
                None => self.done = true,
            }
        }
    }
}
