//! The Twilio boundary as pure code: signatures, form decoding, webhook events and TwiML.
//! Nothing here does I/O.

pub mod form;
pub mod signature;
pub mod twiml;
pub mod webhook;
