//! The text `hanko-dev up` prints once the stack is healthy: the address
//! of each component, a token per demo user, and `curl` lines to paste.
//!
//! The lines are printed without the log prefix so they can be copied as
//! they are. Tokens are printed on purpose here, and only here: they are
//! development tokens for the demo users.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use super::database::DemoUser;

/// The item API path behind edge-proxy's `/api` route.
pub const ITEMS_PATH: &str = "/api/v1/item/";

/// Everything the banner shows.
pub struct Banner<'a> {
    /// edge-proxy's first client address.
    pub proxy: SocketAddr,
    /// edge-proxy's admin address.
    pub proxy_admin: SocketAddr,
    /// hanko-dev's address.
    pub hanko: SocketAddr,
    /// item-api's address.
    pub backend: SocketAddr,
    /// PostgreSQL's port and data directory.
    pub postgres: (u16, &'a Path),
    /// The demo users with their tokens.
    pub users: Vec<(&'a DemoUser, String)>,
    /// User A's first item, which user B cannot see.
    pub item_of_a: i64,
    /// The command that mints another token, up to `--sub`.
    pub token_command: String,
    /// The `up` data directory.
    pub data_dir: &'a Path,
}

impl Banner<'_> {
    /// Renders the banner text.
    pub fn render(&self) -> String {
        let proxy = format!("http://{}", self.proxy);
        let items = format!("{proxy}{ITEMS_PATH}");
        let mut text = String::new();
        let out = &mut text;

        let _ = writeln!(out);
        let _ = writeln!(out, "hanko-edge is running.");
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  edge-proxy  {proxy}   (admin: http://{})",
            self.proxy_admin
        );
        let _ = writeln!(
            out,
            "  hanko-dev   http://{}   (JWKS at /.well-known/jwks.json)",
            self.hanko
        );
        let _ = writeln!(
            out,
            "  item-api    http://{}   (clients go through edge-proxy)",
            self.backend
        );
        let _ = writeln!(
            out,
            "  PostgreSQL  127.0.0.1:{}   (data in {})",
            self.postgres.0,
            self.postgres.1.display()
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "Demo users (tokens valid for 12 hours):");
        for (user, _) in &self.users {
            let _ = writeln!(out, "  {}  {}  {}", user.label, user.id, user.email);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "Paste into a shell:");
        let _ = writeln!(out);
        for (user, token) in &self.users {
            let _ = writeln!(out, "export TOKEN_{}='{token}'", user.label);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "# User A lists their items:");
        let _ = writeln!(
            out,
            "curl -sS {items} -H \"Authorization: Bearer $TOKEN_A\""
        );
        let _ = writeln!(out, "# User A creates an item:");
        let _ = writeln!(
            out,
            "curl -sS -X POST {items} -H \"Authorization: Bearer $TOKEN_A\" \
             -H 'Content-Type: application/json' -d '{{\"title\": \"Try hanko-edge\"}}'"
        );
        let _ = writeln!(
            out,
            "# User B asks for user A's item {} and gets 404:",
            self.item_of_a
        );
        let _ = writeln!(
            out,
            "curl -sS -i {proxy}{ITEMS_PATH}{} -H \"Authorization: Bearer $TOKEN_B\"",
            self.item_of_a
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Another token: {} --sub <user uuid>",
            self.token_command
        );
        let _ = writeln!(
            out,
            "Ctrl-C stops the stack; the data stays in {} (`hanko-dev up --reset` starts afresh).",
            self.data_dir.display()
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::up::database::DEMO_USERS;

    fn banner() -> String {
        Banner {
            proxy: "127.0.0.1:8080".parse().expect("addr"),
            proxy_admin: "127.0.0.1:9090".parse().expect("addr"),
            hanko: "127.0.0.1:8000".parse().expect("addr"),
            backend: "127.0.0.1:8081".parse().expect("addr"),
            postgres: (5433, Path::new(".dev/postgres")),
            users: vec![
                (&DEMO_USERS[0], "token.of.a".to_owned()),
                (&DEMO_USERS[1], "token.of.b".to_owned()),
            ],
            item_of_a: 7,
            token_command: "hanko-dev token --data-dir .dev/hanko".to_owned(),
            data_dir: Path::new(".dev"),
        }
        .render()
    }

    #[test]
    fn banner_exports_tokens_and_lists_with_curl() {
        let text = banner();

        assert!(text.contains("export TOKEN_A='token.of.a'\n"), "{text}");
        assert!(text.contains("export TOKEN_B='token.of.b'\n"), "{text}");
        assert!(
            text.contains(
                "\ncurl -sS http://127.0.0.1:8080/api/v1/item/ -H \"Authorization: Bearer $TOKEN_A\"\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn banner_shows_user_b_asking_for_item_of_a() {
        let text = banner();

        assert!(
            text.contains(
                "curl -sS -i http://127.0.0.1:8080/api/v1/item/7 -H \"Authorization: Bearer $TOKEN_B\""
            ),
            "{text}"
        );
    }
}
