//! navarch-controllers
