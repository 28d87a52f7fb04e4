//! callbox: the firmware of a small box that answers an auto repair shop's Twilio calls.
//!
//! The path of a call, top-down: [`server`] accepts Twilio's request and checks its
//! signature ([`twilio::signature`]); [`twilio::webhook`] turns the form into a typed
//! [`calls::CallEvent`]; [`calls::Store`] makes it durable before the answer
//! ([`twilio::twiml`] for the incoming call); [`calls::Bus`] announces the change to whoever
//! watches. [`cli`] is the command line; [`config`] the validated configuration.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod atomic_file;
pub mod calls;
pub mod card;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod indicators;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod net;
pub mod random;
pub mod server;
pub mod simulate;
pub mod sync;
pub mod systemd;
pub mod texts;
pub mod tls;
pub mod twilio;
pub mod web;
