//! Translations: every string the UI shows comes from `locales/zh.json` (the default) or
//! `locales/en.json`, compiled in so the WebAssembly bundle needs no extra request. The language
//! is the `pt_lang` cookie, rendered into `<html lang>` on the server and read back from there
//! when the page hydrates, so server and browser always agree.

use std::collections::HashMap;
use std::sync::LazyLock;

/// The UI language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// Parses a cookie or `<html lang>` value; anything unknown is Chinese.
    pub fn parse(text: &str) -> Lang {
        if text.starts_with("en") {
            Lang::En
        } else {
            Lang::Zh
        }
    }

    /// The other language (what the switch offers).
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }
}

/// The name of the language cookie.
pub const LANG_COOKIE: &str = "pt_lang";

fn parse(json: &str) -> HashMap<String, String> {
    serde_json::from_str(json).expect("locale files are valid JSON objects of strings")
}

static ZH: LazyLock<HashMap<String, String>> =
    LazyLock::new(|| parse(include_str!("../locales/zh.json")));
static EN: LazyLock<HashMap<String, String>> =
    LazyLock::new(|| parse(include_str!("../locales/en.json")));

/// The text of `key` in `lang`; the key itself when missing (a test keeps that from happening).
pub fn tr(lang: Lang, key: &str) -> String {
    let table = match lang {
        Lang::Zh => &*ZH,
        Lang::En => &*EN,
    };
    table.get(key).cloned().unwrap_or_else(|| key.to_owned())
}

/// The translation of `key`, or `None` when there is none (for keys built from a URL, which
/// must never echo what a link's author wrote).
pub fn tr_known(lang: Lang, key: &str) -> Option<String> {
    let table = match lang {
        Lang::Zh => &*ZH,
        Lang::En => &*EN,
    };
    table.get(key).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_the_same_keys() {
        let mut zh: Vec<_> = ZH.keys().collect();
        let mut en: Vec<_> = EN.keys().collect();
        zh.sort();
        en.sort();
        assert_eq!(zh, en);
    }

    #[test]
    fn every_key_the_code_uses_exists() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut used = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("tr(lang, \"").skip(1) {
                    used.push(piece.split('"').next().unwrap().to_owned());
                }
            }
        }
        assert!(used.len() > 50, "found {} uses", used.len());
        for key in used {
            assert!(ZH.contains_key(&key), "missing key {key}");
        }
    }

    /// Some editing tools turn a simplified character into its traditional form plus pinyin
    /// ("\u{7db2}(w\u{1ce}ng)" for "\u{7f51}"); `infra/dev/normalize-zh.py` repairs such text.
    #[test]
    fn chinese_strings_carry_no_pinyin_annotations() {
        let tone_marked = |c: char| ('\u{e0}'..='\u{1dc}').contains(&c);
        for (key, value) in ZH.iter() {
            let chars: Vec<char> = value.chars().collect();
            for (i, window) in chars.windows(3).enumerate() {
                let annotated = ('\u{3400}'..='\u{9fff}').contains(&window[0])
                    && window[1] == '('
                    && chars[i + 2..]
                        .iter()
                        .take_while(|c| **c != ')')
                        .any(|c| tone_marked(*c));
                assert!(
                    !annotated,
                    "{key}: {value:?} carries pinyin; run infra/dev/normalize-zh.py"
                );
            }
        }
    }

    #[test]
    fn unknown_languages_fall_back_to_chinese() {
        assert_eq!(Lang::parse("fr"), Lang::Zh);
        assert_eq!(Lang::parse("en-US"), Lang::En);
        assert_eq!(tr(Lang::En, "login.title"), "Log in");
        assert_eq!(tr(Lang::Zh, "login.title"), "登录");
    }
}
