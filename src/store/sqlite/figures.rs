//! Figures on SQLite: loads, definitions and fact revisions, all append-only.

use std::time::SystemTime;

use async_trait::async_trait;

use super::SqliteStore;
use crate::{
    domain::{FactRevision, LoadId, LoadRecord, Metric, Provider},
    store::{
        FigureStore, LoadPlan, StoreContents, StoreError, TokenKey, from_micros, new_token_key,
        rows::{FactRevisionRow, LoadRow, decode_json, encode_json},
        stored_token_key, to_micros,
    },
};

#[async_trait]
impl FigureStore for SqliteStore {
    fn is_shared(&self) -> bool {
        // An embedded file: this process is its only writer.
        false
    }

    async fn read_contents(&self) -> Result<StoreContents, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let loads: Vec<LoadRecord> = sqlx::query_as::<_, LoadRow>(
            "SELECT id, recorded_at_us, file_name, content_sha256, facts_added, facts_revised, \
             facts_unchanged, definitions_changed FROM loads ORDER BY id",
        )
        .fetch_all(&mut *connection)
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
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|body| decode_json::<Provider>("provider", body))
        .collect::<Result<Vec<_>, _>>()?;
        let metrics = sqlx::query_scalar::<_, String>(
            "SELECT body FROM metric_versions v WHERE load_id = \
             (SELECT MAX(load_id) FROM metric_versions WHERE metric_id = v.metric_id) \
             ORDER BY metric_id",
        )
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|body| decode_json::<Metric>("metric", body))
        .collect::<Result<Vec<_>, _>>()?;
        let fact_revisions: Vec<FactRevision> = sqlx::query_as::<_, FactRevisionRow>(
            "SELECT f.provider_id, f.period, f.metric_id, f.revision, f.load_id, l.recorded_at_us, f.body, f.reason \
             FROM fact_revisions f JOIN loads l ON l.id = f.load_id \
             ORDER BY f.provider_id, f.period, f.metric_id, f.revision",
        )
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .map(FactRevision::try_from)
        .collect::<Result<_, _>>()?;
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
            "INSERT INTO server_keys (name, key, created_at_us) VALUES ('tokens', ?, ?) \
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
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&mut *connection)
        .await?;
        let mut dump = String::new();
        for table in tables {
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                    .bind(&table)
                    .fetch_all(&mut *connection)
                    .await?;
            let row_text = columns
                .iter()
                .map(|column| format!("quote(\"{column}\")"))
                .collect::<Vec<_>>()
                .join(" || '|' || ");
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT {row_text} FROM \"{table}\" ORDER BY rowid"
            ))
            .fetch_all(&mut *connection)
            .await?;
            dump.push_str(&format!("-- {table} ({})\n", columns.join(", ")));
            for row in rows {
                dump.push_str(&row);
                dump.push('\n');
            }
        }
        Ok(dump)
    }

    async fn commit_load(&self, plan: &LoadPlan) -> Result<LoadRecord, StoreError> {
        // IMMEDIATE takes the write lock up front, so the head check below cannot race
        // another writer.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        // As-of reads need load times that only grow, even if the wall clock steps back.
        let recorded_at_us = to_micros(std::time::SystemTime::now()).max(last_recorded + 1);
        let definitions_changed = (plan.providers.len() + plan.metrics.len()) as u32;
        sqlx::query(
            "INSERT INTO loads (id, recorded_at_us, file_name, content_sha256, facts_added, \
             facts_revised, facts_unchanged, definitions_changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
                "INSERT INTO provider_versions (provider_id, load_id, body) VALUES (?, ?, ?)",
            )
            .bind(provider.id.as_str())
            .bind(id)
            .bind(encode_json(provider)?)
            .execute(&mut *tx)
            .await?;
        }
        for metric in &plan.metrics {
            sqlx::query("INSERT INTO metric_versions (metric_id, load_id, body) VALUES (?, ?, ?)")
                .bind(metric.id.as_str())
                .bind(id)
                .bind(encode_json(metric)?)
                .execute(&mut *tx)
                .await?;
        }
        for change in &plan.fact_changes {
            sqlx::query(
                "INSERT INTO fact_revisions (provider_id, period, metric_id, revision, load_id, body, reason) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            let providers: Vec<&str> = plan.notify_providers.iter().map(|p| p.as_str()).collect();
            let queued = sqlx::query(
                "INSERT INTO deliveries (kind, load_id, subscriber_id, email, state, attempts, \
                 next_attempt_at_us, created_at_us) \
                 SELECT 'update', ?1, s.id, s.email, 'pending', 0, ?2, ?2 FROM subscribers s \
                 WHERE s.state = 'confirmed' AND (s.follows_all = 1 OR EXISTS ( \
                   SELECT 1 FROM subscriber_providers p WHERE p.subscriber_id = s.id \
                   AND p.provider_id IN (SELECT value FROM json_each(?3)))) \
                 ORDER BY s.id",
            )
            .bind(id)
            .bind(recorded_at_us)
            .bind(encode_json(&providers)?)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "INSERT INTO notifications (load_id, created_at_us, recipients) VALUES (?, ?, ?)",
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
