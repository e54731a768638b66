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

/// `postgres://user:secret@host/db` → `postgres://user:********@host/db`; other URLs as they are.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            if parsed.set_password(Some(MASK)).is_ok() {
                parsed.to_string()
            } else {
                MASK.into()
            }
        }
        _ => url.to_owned(),
    }
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
    fn urls_without_a_password_are_unchanged() {
        assert_eq!(mask_url("sqlite://data/invited.db"), "sqlite://data/invited.db");
        assert_eq!(mask_url("postgres://postgres@127.0.0.1:5432/test"), "postgres://postgres@127.0.0.1:5432/test");
    }
}
