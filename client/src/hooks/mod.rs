//! Hooks of the app, one per file.

mod use_channel;
mod use_commands;
mod use_console;
mod use_drafts;
mod use_interval;
mod use_long_tasks;

pub use use_channel::use_channel;
pub use use_commands::use_commands;
pub use use_console::use_console;
pub use use_drafts::use_drafts;
pub use use_interval::use_interval;
pub use use_long_tasks::use_long_tasks;
