//! Figures on PostgreSQL: loads, definitions and fact revisions, all append-only.

use std::time::SystemTime;

use async_trait::async_trait;

use super::{LOAD_LOCK, PostgresStore};
use crate::{
    domain::{FactRevision, LoadId, LoadRecord, Metric, Provider},
    store::{
        FigureStore, LoadPlan, StoreContents, StoreError, TokenKey, from_micros, new_token_key,
        rows::{FactRevisionRow, LoadRow, decode_json, encode_json},
        stored_token_key, to_micros,
    },
};

#[async_trait]
impl FigureStore for PostgresStore {
    fn is_shared(&self) -> bool {
        // Replicas share the database.
        true
    }

    async fn read_contents(&self) -> Result<StoreContents, StoreError> {
        // One snapshot of the database for all four reads.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let loads: Vec<LoadRecord> = sqlx::query_as::<_, LoadRow>(
            "SELECT id, recorded_at_us, file_name, content_sha256, facts_added, facts_revised, \
             facts_unchanged, definitions_changed FROM loads ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(LoadRecord::from)
        .collect();
        let providers = sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT ON (provider_id) body FROM provider_versions \
             ORDER BY provider_id, load_id DESC",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|body| decode_json::<Provider>("provider", body))
        .collect::<Result<Vec<_>, _>>()?;
        let metrics = sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT ON (metric_id) body FROM metric_versions \
             ORDER BY metric_id, load_id DESC",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|body| decode_json::<Metric>("metric", body))
        .collect::<Result<Vec<_>, _>>()?;
        let fact_revisions: Vec<FactRevision> = sqlx::query_as::<_, FactRevisionRow>(
            "SELECT f.provider_id, f.period, f.metric_id, f.revision, f.load_id, l.recorded_at_us, f.body, f.reason \
             FROM fact_revisions f JOIN loads l ON l.id = f.load_id \
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

    async fn head_load_id(&self) -> Result<LoadId, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM loads")
            .fetch_one(&self.pool)
            .await?;
        Ok(head)
    }

    async fn token_key(&self) -> Result<TokenKey, StoreError> {
        // Racing processes may both insert: the first key stays, and both read it.
        sqlx::query(
            "INSERT INTO server_keys (name, key, created_at_us) VALUES ('tokens', $1, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(new_token_key()?.to_vec())
        .bind(to_micros(SystemTime::now()))
        .execute(&self.pool)
        .await?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT key FROM server_keys WHERE name = 'tokens'")
            .fetch_one(&self.pool)
            .await?;
        stored_token_key(key)
    }

    async fn dump(&self) -> Result<String, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
        )
        .fetch_all(&mut *connection)
        .await?;
        let mut dump = String::new();
        for table in tables {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t ORDER BY 1"))
                    .fetch_all(&mut *connection)
                    .await?;
            dump.push_str(&format!("-- {table}\n"));
            for row in rows {
                dump.push_str(&row);
                dump.push('\n');
            }
        }
        Ok(dump)
    }

    async fn commit_load(&self, plan: &LoadPlan) -> Result<LoadRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Held until commit: one load at a time across every replica.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOAD_LOCK)
            .execute(&mut *tx)
            .await?;
        let (current, last_recorded): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(MAX(id), 0), COALESCE(MAX(recorded_at_us), 0) FROM loads",
        )
        .fetch_one(&mut *tx)
        .await?;
        if current != plan.base_load_id {
            return Err(StoreError::Conflict {
                planned: plan.base_load_id,
                current,
            });
        }
        let id = current + 1;
        // As-of reads need load times that only grow, even if a clock steps back.
        let recorded_at_us = to_micros(std::time::SystemTime::now()).max(last_recorded + 1);
        let definitions_changed = (plan.providers.len() + plan.metrics.len()) as u32;
        sqlx::query(
            "INSERT INTO loads (id, recorded_at_us, file_name, content_sha256, facts_added, \
             facts_revised, facts_unchanged, definitions_changed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(recorded_at_us)
        .bind(&plan.file_name)
        .bind(&plan.content_sha256)
        .bind(i64::from(plan.facts_added))
        .bind(i64::from(plan.facts_revised))
        .bind(i64::from(plan.facts_unchanged))
        .bind(i64::from(definitions_changed))
        .execute(&mut *tx)
        .await?;
        for provider in &plan.providers {
            sqlx::query(
                "INSERT INTO provider_versions (provider_id, load_id, body) VALUES ($1, $2, $3)",
            )
            .bind(provider.id.as_str())
            .bind(id)
            .bind(encode_json(provider)?)
            .execute(&mut *tx)
            .await?;
        }
        for metric in &plan.metrics {
            sqlx::query(
                "INSERT INTO metric_versions (metric_id, load_id, body) VALUES ($1, $2, $3)",
            )
            .bind(metric.id.as_str())
            .bind(id)
            .bind(encode_json(metric)?)
            .execute(&mut *tx)
            .await?;
        }
        for change in &plan.fact_changes {
            sqlx::query(
                "INSERT INTO fact_revisions (provider_id, period, metric_id, revision, load_id, body, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(change.key.provider.as_str())
            .bind(change.key.period.to_string())
            .bind(change.key.metric.as_str())
            .bind(change.revision)
            .bind(id)
            .bind(encode_json(&change.body)?)
            .bind(change.reason.map(|reason| reason.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        if !plan.notify_providers.is_empty() {
            // The transactional outbox: the audience is frozen here, with the load.
            let providers: Vec<String> = plan
                .notify_providers
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect();
            let queued = sqlx::query(
                "INSERT INTO deliveries (kind, load_id, subscriber_id, email, state, attempts, \
                 next_attempt_at_us, created_at_us) \
                 SELECT 'update', $1, s.id, s.email, 'pending', 0, $2, $2 FROM subscribers s \
                 WHERE s.state = 'confirmed' AND (s.follows_all OR EXISTS ( \
                   SELECT 1 FROM subscriber_providers p WHERE p.subscriber_id = s.id \
                   AND p.provider_id = ANY($3))) \
                 ORDER BY s.id",
            )
            .bind(id)
            .bind(recorded_at_us)
            .bind(&providers)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "INSERT INTO notifications (load_id, created_at_us, recipients) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(recorded_at_us)
            .bind(i64::try_from(queued).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(LoadRecord {
            id,
            recorded_at: from_micros(recorded_at_us),
            file_name: plan.file_name.clone(),
            content_sha256: plan.content_sha256.clone(),
            facts_added: plan.facts_added,
            facts_revised: plan.facts_revised,
            facts_unchanged: plan.facts_unchanged,
            definitions_changed,
        })
    }
}
