//! `orderflow auth new-token`: a fresh random service token, printed once, and the line of
//! the tokens file that lets it in (the file holds only the token's digest).
use clap::Subcommand;
use infra::auth::{new_token, Scope};

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print a new random token and its tokens-file entry.
    NewToken {
        /// Who the token belongs to (recorded with every event it publishes).
        #[arg(long)]
        principal: String,
        /// What it may do; repeat for several: orders:write, payments:write,
        /// shipments:write, inventory:write, read, ops.
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
    },
}

fn parse_scope(raw: &str) -> Result<Scope, String> {
    Scope::parse(raw).ok_or_else(|| {
        let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown scope {raw:?}; one of {}", known.join(", "))
    })
}

impl AuthCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            AuthCommand::NewToken { principal, scopes } => {
                let (token, entry) = new_token(&principal, scopes)?;
                println!("token (shown once; give it to {principal}, keep it secret):\n{token}\n");
                println!("add to the tokens file (a JSON array):\n{}", serde_json::to_string(&entry)?);
                Ok(())
            }
        }
    }
}
