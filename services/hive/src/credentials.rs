//! Credentials in database URLs, and the API's read-only database role.

use anyhow::Context;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::Config;

/// The user and password a URL carries, percent-decoded, if it names a user.
pub fn credentials(url: &str) -> Option<(String, Option<String>)> {
    let parsed = url::Url::parse(url).ok()?;
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    (!parsed.username().is_empty())
        .then(|| (decode(parsed.username()), parsed.password().map(decode)))
}

/// `url` without credentials (as given when it does not parse).
pub(crate) fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.into()
        }
        _ => url.to_owned(),
    }
}

/// `url` with `user` and `password` as its credentials.
pub fn with_credentials(url: &str, user: &str, password: &str) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).with_context(|| format!("parse {url}"))?;
    parsed
        .set_username(user)
        .and_then(|()| parsed.set_password(Some(password)))
        .map_err(|()| anyhow::anyhow!("{url} cannot carry credentials"))?;
    Ok(parsed.into())
}

/// Makes the user of `reader_url` a login role of the read-model database that may only read it (a
/// member of `hive_read`, which the migrations create), with the URL's password: creates the role, or
/// sets its password and membership when it exists. `owner` needs the right to create roles; without
/// it, a role made beforehand (by a DBA) is left as it is. The name and password reach the server as
/// bound values, quoted there (`format` with `%I` and `%L`).
pub async fn provision_reader(owner: &DatabaseConnection, reader_url: &str) -> anyhow::Result<()> {
    use sea_orm::TransactionTrait;
    let (user, password) = credentials(reader_url)
        .with_context(|| format!("{} names no user", Config::redacted(reader_url)))?;
    let txn = owner.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        owner.get_database_backend(),
        "SELECT set_config('hive.reader_user', $1, true), \
                set_config('hive.reader_password', $2, true)",
        [user.clone().into(), password.unwrap_or_default().into()],
    ))
    .await?;
    txn.execute_unprepared(
        "DO $hive$ DECLARE \
             who text := current_setting('hive.reader_user'); \
             secret text := current_setting('hive.reader_password'); \
             login text := CASE WHEN secret = '' THEN 'LOGIN' \
                                ELSE format('LOGIN PASSWORD %L', secret) END; \
         BEGIN \
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = who) THEN \
                 BEGIN \
                     EXECUTE format('CREATE ROLE %I %s', who, login); \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
                 END; \
             ELSE \
                 BEGIN \
                     EXECUTE format('ALTER ROLE %I %s', who, login); \
                 EXCEPTION WHEN insufficient_privilege THEN \
                     RAISE NOTICE 'role % exists; left as it is', who; \
                 END; \
             END IF; \
             BEGIN \
                 EXECUTE format('GRANT hive_read TO %I', who); \
             EXCEPTION WHEN insufficient_privilege THEN \
                 RAISE NOTICE 'cannot grant hive_read to %; left as it is', who; \
             END; \
         END $hive$",
    )
    .await
    .with_context(|| format!("make {user} a read-only role of the read models"))?;
    txn.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_urls_and_taken_out_of_them() {
        let url = with_credentials("nats://127.0.0.1:4222", "hive-api", "p@ss:w/rd").unwrap();
        assert_eq!(
            credentials(&url),
            Some(("hive-api".into(), Some("p@ss:w/rd".into())))
        );
        assert_eq!(without_credentials(&url), "nats://127.0.0.1:4222");
        assert_eq!(
            credentials("nats://s3cret@host:4222"),
            Some(("s3cret".into(), None)),
            "a token"
        );
        assert_eq!(credentials("nats://host:4222"), None);
        assert_eq!(
            without_credentials("postgres://hive:pw@db:5432/hive"),
            "postgres://db:5432/hive"
        );
    }
}
