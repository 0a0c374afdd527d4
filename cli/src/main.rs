//! The `tasker` binary: the command line with the built-in task types.

fn main() -> std::process::ExitCode {
    tasker_cli::main(tasker::compose::builtin_types)
}
