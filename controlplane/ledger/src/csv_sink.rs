//! The payout sink for an operator who pays by hand: a CSV file, one line per payout
//! (`id,node,address,amount_nano_usd,amount_usd`). Appending the line is paying; a
//! payout whose line is in the file is paid, one whose line is not never will be.

use std::io::Write;
use std::path::PathBuf;

use crate::payout::{PayoutOrder, PayoutOutcome, PayoutSink, SinkError};

/// A CSV file an operator pays from.
#[derive(Debug, Clone)]
pub struct CsvSink {
    /// The file.
    pub path: PathBuf,
}

impl CsvSink {
    fn error(why: impl ToString) -> SinkError {
        SinkError {
            sink: "csv",
            why: why.to_string(),
        }
    }

    fn reference(&self, order: &PayoutOrder) -> String {
        format!("csv:{}#{}", self.path.display(), order.id)
    }

    fn has_line(&self, order: &PayoutOrder) -> Result<bool, SinkError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Self::error(e)),
        };
        let prefix = format!("{},", order.id);
        Ok(text.lines().any(|l| l.starts_with(&prefix)))
    }
}

impl PayoutSink for CsvSink {
    fn name(&self) -> &'static str {
        "csv"
    }

    async fn submit(&self, order: &PayoutOrder) -> Result<String, SinkError> {
        if self.has_line(order)? {
            return Ok(self.reference(order));
        }
        let usd = format!(
            "{}.{:09}",
            order.amount_nano / 1_000_000_000,
            order.amount_nano % 1_000_000_000
        );
        let line = format!(
            "{},{},{},{},{usd}\n",
            order.id, order.node, order.address, order.amount_nano
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(Self::error)?;
        f.write_all(line.as_bytes()).map_err(Self::error)?;
        f.sync_data().map_err(Self::error)?;
        Ok(self.reference(order))
    }

    async fn outcome(&self, order: &PayoutOrder) -> Result<PayoutOutcome, SinkError> {
        Ok(if self.has_line(order)? {
            PayoutOutcome::Paid {
                reference: self.reference(order),
                fee_wei: 0,
            }
        } else {
            PayoutOutcome::NotPaid { fee_wei: 0 }
        })
    }
}
