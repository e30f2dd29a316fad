//! Who may do what on the admin pages: the one place that answers "may this administrator
//! change that account". Every admin handler asks it on the server, after the CSRF check and
//! before touching anything; the templates ask it only to hide forms that would be refused.
//! The CLI is the operator and does not go through it.
//!
//! The rules (Django's admin, tightened so staff cannot take over their superiors):
//! * the admin pages are for active staff users (`is_staff`, as Django's admin and DRF's
//!   `IsAdminUser`); a superuser who is not staff does not get in;
//! * staff change ordinary users only; only superusers change staff and superusers —
//!   password, active flag, roles, tokens, sessions, OAuth2 grants alike;
//! * only superusers create staff or superusers, or promote anyone to them;
//! * nobody deactivates themselves or changes their own role (that is how the last
//!   superuser locks everyone out).

use restguard_core::User;

/// An account's standing, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    /// Neither staff nor superuser.
    Ordinary,
    /// `is_staff` without `is_superuser`.
    Staff,
    /// `is_superuser` (staff or not).
    Superuser,
}

impl Rank {
    /// The rank of `user`.
    pub(crate) fn of(user: &User) -> Self {
        Self::from_flags(user.is_staff, user.is_superuser)
    }

    /// The rank an account with these flags has.
    pub(crate) fn from_flags(is_staff: bool, is_superuser: bool) -> Self {
        match (is_staff, is_superuser) {
            (_, true) => Self::Superuser,
            (true, false) => Self::Staff,
            (false, false) => Self::Ordinary,
        }
    }
}

/// What an administrator does to an existing account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminAction {
    /// Sets a new password.
    SetPassword,
    /// Deactivates the account.
    Deactivate,
    /// Reactivates the account.
    Reactivate,
    /// Sets the staff / superuser flags so that the account gets this rank.
    SetRank(Rank),
    /// Revokes one of its API tokens.
    RevokeToken,
    /// Ends one of its sessions.
    EndSession,
    /// Revokes what it granted an OAuth2 application.
    RevokeApplication,
}

/// Why an admin request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not an active staff user: no admin pages at all.
    NotAdmin,
    /// The target is staff or a superuser and the actor is not a superuser.
    Outranked,
    /// Creating or promoting to staff / superuser needs a superuser.
    CannotGrantRank,
    /// Deactivating oneself.
    OwnDeactivation,
    /// Changing one's own role.
    OwnRole,
}

impl Refusal {
    /// The message the refusal page shows.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::NotAdmin => "You do not have permission to view this page.",
            Self::Outranked => "Only a superuser may change a staff or superuser account.",
            Self::CannotGrantRank => "Only a superuser may create or promote staff and superusers.",
            Self::OwnDeactivation => "You cannot deactivate your own account.",
            Self::OwnRole => "You cannot change your own role.",
        }
    }

    /// Refusals about one's own account are form errors (400); the others are 403.
    pub(crate) fn is_own_account(self) -> bool {
        matches!(self, Self::OwnDeactivation | Self::OwnRole)
    }
}

/// A user allowed into the admin pages, and what they may do there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admin<'a> {
    actor: &'a User,
}

impl<'a> Admin<'a> {
    /// Lets `actor` in if they are an active staff user.
    pub(crate) fn admit(actor: &'a User) -> Result<Self, Refusal> {
        if actor.is_active && actor.is_staff {
            Ok(Self { actor })
        } else {
            Err(Refusal::NotAdmin)
        }
    }

    fn is_superuser(&self) -> bool {
        Rank::of(self.actor) == Rank::Superuser
    }

    /// Whether this administrator may create an account of `rank` (or promote one to it).
    pub(crate) fn may_create(&self, rank: Rank) -> Result<(), Refusal> {
        if rank > Rank::Ordinary && !self.is_superuser() {
            return Err(Refusal::CannotGrantRank);
        }
        Ok(())
    }

    /// Whether this administrator may do `action` to `target`.
    pub(crate) fn may(&self, action: AdminAction, target: &User) -> Result<(), Refusal> {
        let own = target.id == self.actor.id;
        match action {
            AdminAction::Deactivate if own => return Err(Refusal::OwnDeactivation),
            AdminAction::SetRank(_) if own => return Err(Refusal::OwnRole),
            _ => {}
        }
        if Rank::of(target) > Rank::Ordinary && !self.is_superuser() {
            return Err(Refusal::Outranked);
        }
        if let AdminAction::SetRank(rank) = action {
            self.may_create(rank)?;
        }
        Ok(())
    }

    /// Whether the detail page of `target` should offer its action forms at all.
    pub(crate) fn may_manage(&self, target: &User) -> bool {
        self.may(AdminAction::SetPassword, target).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use restguard_core::UserId;
    use time::OffsetDateTime;

    use super::*;

    fn user(id: i64, is_staff: bool, is_superuser: bool) -> User {
        let now = OffsetDateTime::UNIX_EPOCH;
        User {
            id: UserId(id),
            username: format!("u{id}"),
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            is_active: true,
            is_staff,
            is_superuser,
            date_joined: now,
            last_login: None,
            credentials_changed_at: now,
        }
    }

    const ACTIONS: [AdminAction; 7] = [
        AdminAction::SetPassword,
        AdminAction::Deactivate,
        AdminAction::Reactivate,
        AdminAction::SetRank(Rank::Ordinary),
        AdminAction::RevokeToken,
        AdminAction::EndSession,
        AdminAction::RevokeApplication,
    ];

    #[test]
    fn only_active_staff_get_in() {
        assert!(Admin::admit(&user(1, true, false)).is_ok());
        assert!(Admin::admit(&user(1, true, true)).is_ok());
        assert_eq!(
            Admin::admit(&user(1, false, true)).err(),
            Some(Refusal::NotAdmin)
        );
        assert_eq!(
            Admin::admit(&user(1, false, false)).err(),
            Some(Refusal::NotAdmin)
        );
        let mut inactive = user(1, true, true);
        inactive.is_active = false;
        assert_eq!(Admin::admit(&inactive).err(), Some(Refusal::NotAdmin));
    }

    #[test]
    fn staff_change_ordinary_users_only() {
        let staff = user(1, true, false);
        let admin = Admin::admit(&staff).expect("staff");
        for action in ACTIONS {
            assert_eq!(admin.may(action, &user(2, false, false)), Ok(()));
            for (is_staff, is_superuser) in [(true, false), (true, true), (false, true)] {
                assert_eq!(
                    admin.may(action, &user(2, is_staff, is_superuser)),
                    Err(Refusal::Outranked),
                    "{action:?}"
                );
            }
        }
        for rank in [Rank::Staff, Rank::Superuser] {
            assert_eq!(admin.may_create(rank), Err(Refusal::CannotGrantRank));
            assert_eq!(
                admin.may(AdminAction::SetRank(rank), &user(2, false, false)),
                Err(Refusal::CannotGrantRank)
            );
        }
        assert_eq!(admin.may_create(Rank::Ordinary), Ok(()));
    }

    #[test]
    fn superusers_change_everyone_but_never_deactivate_or_demote_themselves() {
        let root = user(1, true, true);
        let admin = Admin::admit(&root).expect("superuser");
        for action in ACTIONS {
            for (is_staff, is_superuser) in [(false, false), (true, false), (true, true)] {
                assert_eq!(admin.may(action, &user(2, is_staff, is_superuser)), Ok(()));
            }
        }
        assert_eq!(admin.may_create(Rank::Superuser), Ok(()));
        assert_eq!(
            admin.may(AdminAction::Deactivate, &root),
            Err(Refusal::OwnDeactivation)
        );
        assert_eq!(
            admin.may(AdminAction::SetRank(Rank::Superuser), &root),
            Err(Refusal::OwnRole)
        );
        assert_eq!(admin.may(AdminAction::SetPassword, &root), Ok(()));
        // Staff get the own-account answer before the rank answer.
        let staff = user(3, true, false);
        let admin = Admin::admit(&staff).expect("staff");
        assert_eq!(
            admin.may(AdminAction::Deactivate, &staff),
            Err(Refusal::OwnDeactivation)
        );
        assert_eq!(
            admin.may(AdminAction::SetPassword, &staff),
            Err(Refusal::Outranked)
        );
    }
}
