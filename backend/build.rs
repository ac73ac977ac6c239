//! Rebuilds item-api when a migration changes, because `sqlx::migrate!`
//! embeds the files of `../sql` at compile time.

fn main() {
    println!("cargo:rerun-if-changed=../sql");
}
