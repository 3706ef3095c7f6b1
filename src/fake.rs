//! A scripted [`Hypervisor`] for unit tests of the actions' decisions
//! (`agent`, `migrate`): it answers what a test lists and records what was
//! asked of it. It proves decision logic only; the lab tests prove the
//! actions against real libvirt and QEMU.

use std::cell::{Cell, RefCell};
use std::sync::mpsc;

use crate::hypervisor::{DomainState, Hypervisor, Observe, Postcopy};
use crate::libvirt;

/// A scripted hypervisor: `states` are returned in order (the last one
/// repeats); calls are recorded.
pub struct Fake {
    pub states: RefCell<Vec<Result<DomainState, ()>>>,
    pub calls: RefCell<Vec<&'static str>>,
    pub autostart: Cell<bool>,
    pub pid: Option<u32>,
    pub pid_dir: bool,
    /// The state after a shutdown request (None: the guest ignores it).
    pub after_shutdown: Option<DomainState>,
    /// Post-copy sides, in order like `states`.
    pub postcopy: RefCell<Vec<Option<Postcopy>>>,
    /// How each migration started ends, in order: Err(()) fails it, None
    /// leaves it running (its sender is kept in `running`).
    pub migrations: RefCell<Vec<Option<Result<(), ()>>>>,
    running: RefCell<Vec<mpsc::SyncSender<Result<(), libvirt::Error>>>>,
}

impl Fake {
    pub fn new(states: &[DomainState]) -> Self {
        Fake {
            states: RefCell::new(states.iter().copied().map(Ok).collect()),
            calls: RefCell::default(),
            autostart: Cell::new(false),
            pid: None,
            pid_dir: true,
            after_shutdown: Some(DomainState::Shutoff),
            postcopy: RefCell::new(vec![None]),
            migrations: RefCell::default(),
            running: RefCell::default(),
        }
    }
    pub fn unreachable() -> Self {
        let f = Fake::new(&[]);
        *f.states.borrow_mut() = vec![Err(())];
        f
    }
    pub fn set(&self, s: DomainState) {
        *self.states.borrow_mut() = vec![Ok(s)];
    }
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.borrow().clone()
    }
}

impl Observe for Fake {
    fn state_and_postcopy(
        &self,
        _: &str,
    ) -> Result<(DomainState, Option<Postcopy>), libvirt::Error> {
        let mut s = self.states.borrow_mut();
        let next = if s.len() > 1 { s.remove(0) } else { s[0] };
        let mut p = self.postcopy.borrow_mut();
        let postcopy = if p.len() > 1 { p.remove(0) } else { p[0] };
        next.map(|s| (s, postcopy))
            .map_err(|()| libvirt::Error::Timeout { what: "get state" })
    }
    /// An active domain has a QEMU process, as in libvirt; `pid`
    /// forces one (a QEMU libvirt does not know about).
    fn qemu_pid(&self, _: &str) -> Option<u32> {
        let active = matches!(self.states.borrow().first(), Some(Ok(s)) if s.is_active());
        self.pid.or(active.then_some(4242))
    }
    fn knows_qemu_pids(&self) -> bool {
        self.pid_dir
    }
}

impl Hypervisor for Fake {
    fn define(&self, _: &str) -> Result<String, libvirt::Error> {
        self.calls.borrow_mut().push("define");
        self.set(DomainState::Shutoff);
        Ok("vm1".into())
    }
    fn start(&self, _: &str) -> Result<(), libvirt::Error> {
        self.calls.borrow_mut().push("start");
        self.set(DomainState::Running);
        Ok(())
    }
    fn shutdown(&self, _: &str) -> Result<(), libvirt::Error> {
        self.calls.borrow_mut().push("shutdown");
        if let Some(s) = self.after_shutdown {
            self.set(s);
        }
        Ok(())
    }
    fn destroy(&self, _: &str) -> Result<(), libvirt::Error> {
        self.calls.borrow_mut().push("destroy");
        self.set(DomainState::Shutoff);
        Ok(())
    }
    fn autostart(&self, _: &str) -> Result<bool, libvirt::Error> {
        Ok(self.autostart.get())
    }
    fn disable_autostart(&self, _: &str) -> Result<(), libvirt::Error> {
        self.calls.borrow_mut().push("autostart off");
        self.autostart.set(false);
        Ok(())
    }
    fn migrate(
        &self,
        _: &str,
        req: &libvirt::MigrationRequest,
    ) -> Result<libvirt::Migration, libvirt::Error> {
        self.calls.borrow_mut().push(if req.postcopy_resume {
            "migrate (resume)"
        } else {
            "migrate"
        });
        let (tx, rx) = mpsc::sync_channel(1);
        match self.migrations.borrow_mut().remove(0) {
            Some(r) => tx
                .send(r.map_err(|()| libvirt::Error::Timeout { what: "migrate" }))
                .unwrap(),
            None => self.running.borrow_mut().push(tx),
        }
        Ok(libvirt::Migration::new(rx))
    }
    fn set_max_downtime(&self, _: &str, _: u64) -> Result<(), libvirt::Error> {
        Ok(())
    }
    fn job(&self, _: &str) -> Result<Option<libvirt::JobProgress>, libvirt::Error> {
        Ok(None)
    }
    fn completed_job(&self, _: &str) -> Result<Option<libvirt::JobProgress>, libvirt::Error> {
        Ok(None)
    }
    fn abort_job(&self, _: &str) -> Result<(), libvirt::Error> {
        Ok(())
    }
    fn start_postcopy(&self, _: &str) -> Result<(), libvirt::Error> {
        unimplemented!("no unit test switches a migration to post-copy")
    }
}
