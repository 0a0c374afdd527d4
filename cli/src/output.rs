//! Standard output that ends quietly when the reader goes away (`tasker list | head`), as
//! Unix tools do, instead of panicking as `println!` does on a closed pipe.

use std::fmt;
use std::io::Write;

use crate::CliError;

/// Writes one line to standard output.
pub fn write_line(args: fmt::Arguments) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(CliError::Output)
}

/// True when `err` means standard output's reader has gone.
pub fn reader_gone(err: &CliError) -> bool {
    matches!(err, CliError::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
}
