//! A scripted [`Hypervisor`] for unit tests of the actions' decisions: it
//! answers what a test lists (states, jobs over time, how each migration
//! ends, what an abort does) and records what was asked of it. It proves
//! decision logic only; the lab tests prove the actions against real
//! libvirt and QEMU.

use std::cell::{Cell, RefCell};
use std::sync::mpsc;

use super::{
    DomainState, Error, ErrorKind, Hypervisor, JobProgress, Machine, Migration, MigrationRequest,
    Observe, Postcopy, Presence, Qemu, Resource, Status,
};

/// A scripted hypervisor: `states` are returned in order (the last one
/// repeats); calls are recorded.
pub struct Fake {
    pub states: RefCell<Vec<Result<DomainState, ()>>>,
    pub calls: RefCell<Vec<String>>,
    pub autostart: Cell<bool>,
    /// A QEMU process libvirt does not know about (or, for an unreachable
    /// libvirtd, the one that lives); None: as the state says.
    pub pid: Cell<Option<u32>>,
    /// The process table cannot be read.
    pub qemu_unknown: bool,
    /// libvirt paused the domain for a migration, in order like `states`.
    pub migrating: RefCell<Vec<bool>>,
    /// The domain's current job, in order like `states`.
    pub jobs: RefCell<Vec<Option<JobProgress>>>,
    /// An abort leaves the job running (as one at its very end does).
    pub abort_ignored: bool,
    /// An abort comes too late: the running migrations complete.
    pub abort_completes: bool,
    /// An abort leaves the scripted job samples to the next migration.
    pub abort_keeps_jobs: bool,
    /// The state after a shutdown request (None: the guest ignores it).
    pub after_shutdown: Option<DomainState>,
    /// The domain XML (no disks unless a test sets some).
    pub xml: RefCell<String>,
    /// What every disk occupies.
    pub disk_bytes: u64,
    /// How many starts are refused because another call holds the domain.
    pub start_busy: Cell<u32>,
    /// Post-copy sides, in order like `states`.
    pub postcopy: RefCell<Vec<Option<Postcopy>>>,
    /// How each migration started ends, in order: Err(()) fails it, None
    /// (and every migration past the list) leaves it running until an
    /// abort ends it.
    pub migrations: RefCell<Vec<Option<Result<(), ()>>>>,
    /// The node's networks, bridges and pools; any other is missing.
    pub resources: RefCell<Vec<(Resource, String, Presence)>>,
    /// What the node's emulator lacks (None: it runs any machine).
    pub unsupported: Option<String>,
    /// Memory a new guest can have here.
    pub memory_bytes: u64,
    /// The node's persistent definition of the domain.
    pub definition: RefCell<Option<String>>,
    running: RefCell<Vec<mpsc::SyncSender<Result<(), Error>>>>,
}

impl Fake {
    pub fn new(states: &[DomainState]) -> Self {
        Fake {
            states: RefCell::new(states.iter().copied().map(Ok).collect()),
            calls: RefCell::default(),
            autostart: Cell::new(false),
            pid: Cell::new(None),
            qemu_unknown: false,
            migrating: RefCell::new(vec![false]),
            jobs: RefCell::new(vec![None]),
            abort_ignored: false,
            abort_completes: false,
            abort_keeps_jobs: false,
            after_shutdown: Some(DomainState::Shutoff),
            start_busy: Cell::new(0),
            disk_bytes: 4 << 20,
            xml: RefCell::new("<domain type='qemu'><name>vm1</name><devices/></domain>".into()),
            postcopy: RefCell::new(vec![None]),
            migrations: RefCell::default(),
            resources: RefCell::default(),
            unsupported: None,
            memory_bytes: 8 << 30,
            definition: RefCell::default(),
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
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

impl Observe for Fake {
    fn status(&self, _: &str) -> Result<Status, Error> {
        let state = next(&mut self.states.borrow_mut());
        let postcopy = next(&mut self.postcopy.borrow_mut());
        let migrating = next(&mut self.migrating.borrow_mut());
        state
            .map(|state| Status {
                state,
                postcopy,
                migrating,
            })
            .map_err(|()| timeout("get state"))
    }
    /// An active domain has a QEMU process, as in libvirt; `pid`
    /// forces one (a QEMU libvirt does not know about).
    fn qemu(&self, _: &str) -> Qemu {
        let active = matches!(self.states.borrow().first(), Some(Ok(s)) if s.is_active());
        match self.pid.get().or(active.then_some(4242)) {
            _ if self.qemu_unknown => Qemu::Unreadable("scripted".into()),
            Some(pid) => Qemu::Alive(pid),
            None => Qemu::Gone,
        }
    }
    fn definition(&self, _: &str) -> Result<Option<String>, Error> {
        Ok(self.definition.borrow().clone())
    }
}

impl Hypervisor for Fake {
    fn define(&self, xml: &str) -> Result<String, Error> {
        self.calls.borrow_mut().push("define".into());
        *self.definition.borrow_mut() = Some(xml.into());
        // Defining an unknown domain makes it shut off; a redefinition
        // leaves its state.
        if matches!(
            self.states.borrow().first(),
            Some(Ok(DomainState::Undefined))
        ) {
            self.set(DomainState::Shutoff);
        }
        Ok("vm1".into())
    }
    fn xml(&self, _: &str) -> Result<String, Error> {
        Ok(self.xml.borrow().clone())
    }
    fn disk_allocation(&self, _: &str, _: &str) -> Result<u64, Error> {
        Ok(self.disk_bytes)
    }
    fn start(&self, _: &str) -> Result<(), Error> {
        self.calls.borrow_mut().push("start".into());
        if self.start_busy.get() > 0 {
            self.start_busy.set(self.start_busy.get() - 1);
            return Err(Error::new(
                ErrorKind::Busy,
                "libvirt start: job lock held by monitor=remoteDispatchDomainMigratePerform3Params",
            ));
        }
        self.set(DomainState::Running);
        Ok(())
    }
    fn shutdown(&self, _: &str) -> Result<(), Error> {
        self.calls.borrow_mut().push("shutdown".into());
        if let Some(s) = self.after_shutdown {
            self.set(s);
        }
        Ok(())
    }
    fn destroy(&self, _: &str) -> Result<(), Error> {
        self.calls.borrow_mut().push("destroy".into());
        self.set(DomainState::Shutoff);
        Ok(())
    }
    fn autostart(&self, _: &str) -> Result<bool, Error> {
        Ok(self.autostart.get())
    }
    fn disable_autostart(&self, _: &str) -> Result<(), Error> {
        self.calls.borrow_mut().push("autostart off".into());
        self.autostart.set(false);
        Ok(())
    }
    fn migrate(&self, _: &str, req: &MigrationRequest) -> Result<Migration, Error> {
        self.calls
            .borrow_mut()
            .push(match (req.postcopy_resume, &req.copy_disks[..]) {
                (true, _) => "migrate (resume)".into(),
                (false, []) => "migrate".into(),
                (false, disks) => format!("migrate copying {}", disks.join(" ")),
            });
        let (tx, rx) = mpsc::sync_channel(1);
        let mut scripted = self.migrations.borrow_mut();
        match (!scripted.is_empty()).then(|| scripted.remove(0)).flatten() {
            Some(r) => tx.send(r.map_err(|()| timeout("migrate"))).unwrap(),
            None => self.running.borrow_mut().push(tx),
        }
        Ok(Migration::new(rx))
    }
    fn set_max_downtime(&self, _: &str, ms: u64) -> Result<(), Error> {
        self.calls.borrow_mut().push(format!("downtime {ms}"));
        Ok(())
    }
    fn job(&self, _: &str) -> Result<Option<JobProgress>, Error> {
        Ok(next(&mut self.jobs.borrow_mut()))
    }
    fn completed_job(&self, _: &str) -> Result<Option<JobProgress>, Error> {
        Ok(None)
    }
    fn abort_job(&self, _: &str) -> Result<(), Error> {
        self.calls.borrow_mut().push("abort".into());
        if !self.abort_ignored {
            if !self.abort_keeps_jobs {
                *self.jobs.borrow_mut() = vec![None];
            }
            // libvirt answers the aborted migration's call with an error,
            // unless it completed first.
            for tx in self.running.borrow_mut().drain(..) {
                let end = if self.abort_completes {
                    Ok(())
                } else {
                    Err(timeout("migrate (aborted)"))
                };
                let _ = tx.send(end);
            }
        }
        Ok(())
    }
    fn start_postcopy(&self, _: &str) -> Result<(), Error> {
        self.calls.borrow_mut().push("postcopy".into());
        *self.states.borrow_mut() = vec![Ok(DomainState::Paused)];
        *self.postcopy.borrow_mut() = vec![Some(Postcopy::Outgoing)];
        Ok(())
    }
    fn kill_qemu(&self, _: &str, _: u32) -> Result<(), Error> {
        self.calls.borrow_mut().push("kill".into());
        self.pid.set(None);
        self.set(DomainState::Shutoff);
        Ok(())
    }
    fn presence(&self, what: Resource, name: &str) -> Result<Presence, Error> {
        let known = self.resources.borrow();
        Ok(known
            .iter()
            .find(|(w, n, _)| *w == what && n == name)
            .map_or(Presence::Missing, |r| r.2))
    }
    fn activate(&self, what: Resource, name: &str) -> Result<(), Error> {
        self.calls
            .borrow_mut()
            .push(format!("activate {what} {name}"));
        for r in self.resources.borrow_mut().iter_mut() {
            if r.0 == what && r.1 == name {
                r.2 = Presence::Active;
            }
        }
        Ok(())
    }
    fn supports(&self, _: &Machine) -> Result<(), Error> {
        match &self.unsupported {
            Some(why) => Err(Error::new(ErrorKind::Other, why.clone())),
            None => Ok(()),
        }
    }
    fn available_memory(&self) -> Result<u64, Error> {
        Ok(self.memory_bytes)
    }
}

/// The next scripted answer: the list's first, the last one repeating.
fn next<T: Clone>(list: &mut Vec<T>) -> T {
    if list.len() > 1 {
        list.remove(0)
    } else {
        list[0].clone()
    }
}

/// What a libvirtd that does not answer `what` gives.
pub fn timeout(what: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("libvirtd did not answer {what} in time"),
    )
}
