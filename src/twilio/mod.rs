//! The Twilio boundary as pure code: signatures, form decoding, webhook events, TwiML and
//! the Media Streams messages.
//! Nothing here does I/O.

pub mod form;
pub mod media;
pub mod rest;
pub mod sid;
pub mod signature;
pub mod twiml;
pub mod webhook;
