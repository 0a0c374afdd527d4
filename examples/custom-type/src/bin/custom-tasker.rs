//! `tasker` with the application's task types: `custom-tasker serve`, `process`, `list`...

fn main() -> std::process::ExitCode {
    tasker_cli::main(custom_type::task_types)
}
