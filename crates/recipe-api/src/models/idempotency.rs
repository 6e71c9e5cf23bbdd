//! `idempotency_keys` rows (docs/api.md#idempotency): claim a key and complete it in the
//! write's transaction, replay it on a retry.

use chrono::NaiveDateTime;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::schema::idempotency_keys;

/// The response a completed key replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub body: Option<Vec<u8>>,
}

/// A key's row as the claim step reads it.
#[derive(Debug, Queryable)]
pub struct KeyRow {
    pub request_hash: Vec<u8>,
    pub status: Option<i16>,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub body: Option<Vec<u8>>,
    pub expires_at: NaiveDateTime,
}

impl KeyRow {
    /// The stored response, when the write completed.
    pub fn response(&self) -> Option<StoredResponse> {
        let status = u16::try_from(self.status?).ok()?;
        Some(StoredResponse {
            status,
            location: self.location.clone(),
            etag: self.etag.clone(),
            body: self.body.clone(),
        })
    }
}

/// Inserts the claim; false when the key already has a (committed) row. Waits on a claim
/// another transaction holds, up to the session's lock-wait limit.
pub fn insert_claim(
    conn: &mut MysqlConnection,
    principal: &[u8],
    key: &str,
    request_hash: &[u8],
    now: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::principal.eq(principal),
            idempotency_keys::idem_key.eq(key),
            idempotency_keys::request_hash.eq(request_hash),
            idempotency_keys::created_at.eq(now),
            idempotency_keys::expires_at.eq(expires_at),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The key's row, if any.
pub fn find(
    conn: &mut MysqlConnection,
    principal: &[u8],
    key: &str,
) -> QueryResult<Option<KeyRow>> {
    idempotency_keys::table
        .find((principal, key))
        .select((
            idempotency_keys::request_hash,
            idempotency_keys::status,
            idempotency_keys::location,
            idempotency_keys::etag,
            idempotency_keys::body,
            idempotency_keys::expires_at,
        ))
        .first(conn)
        .optional()
}

/// Deletes the key's row if it expired before `now`.
pub fn delete_expired(
    conn: &mut MysqlConnection,
    principal: &[u8],
    key: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::delete(
        idempotency_keys::table
            .find((principal, key))
            .filter(idempotency_keys::expires_at.lt(now)),
    )
    .execute(conn)
}

/// Stores the response of the write (inside the write's transaction).
pub fn complete(
    conn: &mut MysqlConnection,
    principal: &[u8],
    key: &str,
    response: &StoredResponse,
) -> QueryResult<usize> {
    diesel::update(idempotency_keys::table.find((principal, key)))
        .set((
            idempotency_keys::status.eq(Some(i16::try_from(response.status).unwrap_or(500))),
            idempotency_keys::location.eq(response.location.as_deref()),
            idempotency_keys::etag.eq(response.etag.as_deref()),
            idempotency_keys::body.eq(response.body.as_deref()),
        ))
        .execute(conn)
}

/// Deletes up to `limit` expired rows; returns how many.
pub fn purge_expired(
    conn: &mut MysqlConnection,
    now: NaiveDateTime,
    limit: i64,
) -> QueryResult<usize> {
    diesel::sql_query("DELETE FROM idempotency_keys WHERE expires_at < ? LIMIT ?")
        .bind::<diesel::sql_types::Datetime, _>(now)
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .execute(conn)
}
