//! Figures: loads, definitions and fact revisions, all append-only.

use std::time::SystemTime;

use super::{
    Store, StoreContents, StoreError, StoreTx, from_micros,
    rows::{FactRevisionRow, LoadRow, decode_json, encode_json},
    to_micros,
};
use crate::domain::Named;
use crate::domain::{
    FactBody, FactKey, FactRevision, LoadId, LoadRecord, Metric, Provider, RevisionReason,
};
use crate::sealing::TokenKey;

impl Store {
    pub async fn read_contents(&self) -> Result<StoreContents, StoreError> {
        let mut tx = self.backend.begin_read(&self.pool).await?;
        let loads: Vec<LoadRecord> = sqlx::query_as::<_, LoadRow>(
            "SELECT id, recorded_at_us, file_name, content_sha256, facts_added, facts_revised, \
             facts_unchanged, definitions_changed FROM loads ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(LoadRecord::from)
        .collect();
        // The newest version of each definition: the row with the highest load id.
        let providers = sqlx::query_scalar::<_, String>(
            "SELECT body FROM provider_versions v WHERE load_id = \
             (SELECT MAX(load_id) FROM provider_versions WHERE provider_id = v.provider_id) \
             ORDER BY provider_id",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|body| decode_json::<Provider>("provider", body))
        .collect::<Result<Vec<_>, _>>()?;
        let metrics = sqlx::query_scalar::<_, String>(
            "SELECT body FROM metric_versions v WHERE load_id = \
             (SELECT MAX(load_id) FROM metric_versions WHERE metric_id = v.metric_id) \
             ORDER BY metric_id",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|body| decode_json::<Metric>("metric", body))
        .collect::<Result<Vec<_>, _>>()?;
        let fact_revisions: Vec<FactRevision> = sqlx::query_as::<_, FactRevisionRow>(
            "SELECT f.provider_id, f.period, f.metric_id, f.revision, f.load_id, l.recorded_at_us, \
             f.body, f.reason FROM fact_revisions f JOIN loads l ON l.id = f.load_id \
             ORDER BY f.provider_id, f.period, f.metric_id, f.revision",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(FactRevision::try_from)
        .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(StoreContents {
            loads,
            providers,
            metrics,
            fact_revisions,
        })
    }

    /// Id of the newest load, 0 when nothing was ever loaded.
    pub async fn head_load_id(&self) -> Result<LoadId, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM loads")
            .fetch_one(&self.pool)
            .await?;
        Ok(head)
    }

    /// The server's key for the tokens it gives clients, made on first use; the same
    /// for every process on this database.
    pub async fn token_key(&self) -> Result<TokenKey, StoreError> {
        let mut candidate = [0u8; 32];
        getrandom::fill(&mut candidate)
            .map_err(|err| StoreError::Corrupt(format!("no randomness for a key: {err}")))?;
        // Racing processes may both insert: the first key stays, and both read it.
        sqlx::query(
            "INSERT INTO server_keys (name, key, created_at_us) VALUES ('tokens', $1, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(candidate.to_vec())
        .bind(to_micros(SystemTime::now()))
        .execute(&self.pool)
        .await?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT key FROM server_keys WHERE name = 'tokens'")
            .fetch_one(&self.pool)
            .await?;
        key.try_into()
            .map_err(|_| StoreError::Corrupt("the stored token key is not 32 bytes".into()))
    }
}

impl StoreTx {
    /// Takes the load lock for the rest of the transaction and reads the newest load's
    /// id and time (0 and the epoch before the first load).
    pub async fn lock_load_head(&mut self) -> Result<(LoadId, SystemTime), StoreError> {
        self.backend.lock_loads(&mut self.tx).await?;
        let (head, recorded_at_us): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(MAX(id), 0), COALESCE(MAX(recorded_at_us), 0) FROM loads",
        )
        .fetch_one(&mut *self.tx)
        .await?;
        Ok((head, from_micros(recorded_at_us)))
    }

    pub async fn insert_load(&mut self, load: &LoadRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO loads (id, recorded_at_us, file_name, content_sha256, facts_added, \
             facts_revised, facts_unchanged, definitions_changed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(load.id)
        .bind(to_micros(load.recorded_at))
        .bind(&load.file_name)
        .bind(&load.content_sha256)
        .bind(i64::from(load.facts_added))
        .bind(i64::from(load.facts_revised))
        .bind(i64::from(load.facts_unchanged))
        .bind(i64::from(load.definitions_changed))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_provider_version(
        &mut self,
        load: LoadId,
        provider: &Provider,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO provider_versions (provider_id, load_id, body) VALUES ($1, $2, $3)",
        )
        .bind(provider.id.as_str())
        .bind(load)
        .bind(encode_json(provider)?)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_metric_version(
        &mut self,
        load: LoadId,
        metric: &Metric,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO metric_versions (metric_id, load_id, body) VALUES ($1, $2, $3)")
            .bind(metric.id.as_str())
            .bind(load)
            .bind(encode_json(metric)?)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn insert_fact_revision(
        &mut self,
        load: LoadId,
        key: &FactKey,
        revision: i64,
        reason: Option<RevisionReason>,
        body: &FactBody,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO fact_revisions (provider_id, period, metric_id, revision, load_id, body, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.provider.as_str())
        .bind(key.period.to_string())
        .bind(key.metric.as_str())
        .bind(revision)
        .bind(load)
        .bind(encode_json(body)?)
        .bind(reason.map(|reason| reason.as_str()))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
