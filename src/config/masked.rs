//! The configuration as `check-config` prints it: resolved (defaults and environment
//! overrides applied), with every secret replaced by a mask.

use serde_json::Value;

use super::Config;

/// What a secret is shown as.
const MASK: &str = "********";

/// Keys whose values are secrets, wherever they appear (recorder tokens, IMAP and SMTP
/// passwords). `token_env` names a variable and is shown.
fn is_secret_key(key: &str) -> bool {
    matches!(key, "token" | "password" | "secret") || key.ends_with("_password") || key.ends_with("_secret")
}

/// The resolved configuration as TOML, secrets masked.
pub fn resolved_toml(config: &Config) -> Result<String, String> {
    let mut value = serde_json::to_value(config).map_err(|e| e.to_string())?;
    mask(&mut value);
    toml::to_string_pretty(&value).map_err(|e| e.to_string())
}

/// Masks secrets and drops unset values (TOML has no null).
fn mask(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            for (key, v) in map.iter_mut() {
                if is_secret_key(key) && v.is_string() {
                    *v = Value::String(MASK.into());
                } else if key == "url" {
                    if let Some(url) = v.as_str() {
                        *v = Value::String(mask_url(url));
                    }
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// A store URL or connection string with its secrets masked, for check-config, logs and
/// errors: `postgres://user:secret@host/db` → `postgres://user:********@host/db`, a
/// `?password=…` (or `sslpassword`, `…_secret`, `token`) query parameter, and the same keys
/// in a `host=… password=…` connection string. Anything else is shown as it is.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.cannot_be_a_base() => mask_key_values(url),
        Ok(mut parsed) => {
            if parsed.password().is_some() && parsed.set_password(Some(MASK)).is_err() {
                return MASK.into();
            }
            if parsed.query_pairs().any(|(k, _)| is_secret_param(&k)) {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_param(&k) { MASK.into() } else { v.into_owned() };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not a URL: a `key=value` connection string, or a malformed URL whose user
        // information is hidden whole.
        Err(_) => match url.split_once("://") {
            Some((scheme, rest)) if rest.contains('@') => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                mask_key_values(&format!("{scheme}://{MASK}@{host}"))
            }
            _ => mask_key_values(url),
        },
    }
}

/// A query or connection-string key naming a secret (`password`, `sslpassword`, …).
fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    is_secret_key(&key) || key.ends_with("password")
}

/// `host=db password='a b' user=x` → `host=db password=******** user=x`: each value of a
/// secret key, quoted (`'…'` with `\'` escapes) or up to the next space, is masked.
fn mask_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let key_start = rest[..eq].rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let key = rest[key_start..eq].trim_start_matches(['?', '&', ';']);
        let value = &rest[eq + 1..];
        let value_len = if value.starts_with('\'') {
            let mut escaped = false;
            value
                .char_indices()
                .skip(1)
                .find(|&(_, c)| {
                    let end = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(value.len(), |(i, _)| i + 1)
        } else {
            value.find(|c: char| c.is_whitespace() || c == '&' || c == ';').unwrap_or(value.len())
        };
        out.push_str(&rest[..=eq]);
        if is_secret_param(key) {
            out.push_str(MASK);
        } else {
            out.push_str(&value[..value_len]);
        }
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_the_rest_is_shown() {
        let config = Config::from_toml(
            "[store]\nurl = \"postgres://invited:hunter2@127.0.0.1/invited\"\n\
             [[recorders.tokens]]\nname = \"fleet\"\ntoken = \"0123456789abcdef-secret\"\n\
             [[tenants]]\nid = \"acme\"\nassistant_addresses = [\"acme@assistant.example.com\"]\n",
        )
        .expect("valid");
        let text = resolved_toml(&config).expect("renders");
        assert!(!text.contains("hunter2") && !text.contains("0123456789abcdef-secret"), "{text}");
        assert!(text.contains("postgres://invited:********@127.0.0.1/invited"), "{text}");
        assert!(text.contains("token = \"********\""), "{text}");
        assert!(text.contains("name = \"fleet\""), "{text}");
        assert!(text.contains("horizon_days = 30"), "defaults are shown: {text}");
        let reparsed: toml::Value = toml::from_str(&text).expect("the output is TOML");
        assert!(reparsed.get("tenants").is_some());
    }

    #[test]
    fn passwords_in_query_parameters_and_connection_strings_are_masked() {
        assert_eq!(
            mask_url("postgres://invited@db.internal/invited?sslmode=require&password=hunter2"),
            "postgres://invited@db.internal/invited?sslmode=require&password=********"
        );
        assert_eq!(
            mask_url("postgres://u:pw1@h/d?PassWord=pw2&sslpassword=pw3&application_name=x"),
            "postgres://u:********@h/d?PassWord=********&sslpassword=********&application_name=x"
        );
        assert_eq!(
            mask_url("host=db.internal user=invited password=hunter2 dbname=invited"),
            "host=db.internal user=invited password=******** dbname=invited"
        );
        assert_eq!(
            mask_url("host=db password='hunter 2 \\' x' sslmode=require"),
            "host=db password=******** sslmode=require"
        );
        assert_eq!(mask_url("password=hunter2"), "password=********");
        // A URL the parser refuses still hides its user information.
        let bad = mask_url("postgres://u:hunter2@[bad/db");
        assert!(!bad.contains("hunter2"), "{bad}");
        for url in [
            "mysql://root:hunter2@127.0.0.1/db",
            "postgres://u@h/d?password=hunter2",
            "Server=db;Password=hunter2;Database=x",
            "host=db password=hunter2",
        ] {
            assert!(!mask_url(url).contains("hunter2"), "{url} → {}", mask_url(url));
        }
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        assert_eq!(
            mask_url("host=db.internal user=invited dbname=invited"),
            "host=db.internal user=invited dbname=invited"
        );
        assert_eq!(mask_url("sqlite://data/invited.db"), "sqlite://data/invited.db");
        assert_eq!(mask_url("postgres://postgres@127.0.0.1:5432/test"), "postgres://postgres@127.0.0.1:5432/test");
    }
}
