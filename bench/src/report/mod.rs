//! What the runs write. `docs/BENCHMARKS.md` is written whole by
//! [`benchmarks`] (`bench run`) and each other run owns one section of it,
//! kept between two markers so that a run rewriting the rest carries it
//! over: [`scale`], [`cluster`], [`channels`], [`presence`]. [`kept`] finds and replaces
//! those sections.

pub mod benchmarks;
pub mod channels;
pub mod cluster;
pub mod kept;
pub mod presence;
pub mod scale;
