//! Authentication and permissions. A handler names the permission it needs in its
//! signature (`Authorized<perm::PoliciesWrite>`), so an endpoint cannot forget to check.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use praetor_store::{ApiKey, Scope};

use crate::error::{ApiError, Code};
use crate::state::{AppState, WorkspaceState};

/// A permission: which key scopes grant it.
pub trait Permission: Send + Sync + 'static {
    const NAME: &'static str;
    const GRANTED_TO: &'static [Scope];
    /// Scopes that bar a key from this permission whatever else it holds.
    const REFUSED_TO: &'static [Scope] = &[];
}

pub mod perm {
    use super::{Permission, Scope};

    macro_rules! permission {
        ($name:ident, $label:literal, [$($scope:ident),*] $(, refused to [$($refused:ident),*])?) => {
            pub struct $name;
            impl Permission for $name {
                const NAME: &'static str = $label;
                const GRANTED_TO: &'static [Scope] = &[$(Scope::$scope),*];
                $(const REFUSED_TO: &'static [Scope] = &[$(Scope::$refused),*];)?
            }
        };
    }

    permission!(Read, "read", [Admin, Read, Approvals, Agent]);
    permission!(Enforce, "enforce", [Admin, Agent]);
    permission!(RegisterAgents, "agents:register", [Admin, Agent]);
    permission!(AgentsWrite, "agents:write", [Admin]);
    permission!(PoliciesWrite, "policies:write", [Admin]);
    permission!(KeysWrite, "keys:write", [Admin]);
    // Who acts does not approve: a key that can act for agents can neither resolve
    // their escalations nor widen their authority (windows, breakglass), whatever other
    // scope it holds (keys made before `agent` could not be combined with others).
    permission!(Approvals, "approvals", [Admin, Approvals], refused to [Agent]);
}

/// A request authenticated with a key that holds permission `P`.
pub struct Authorized<P: Permission> {
    pub key: ApiKey,
    pub workspace: Arc<WorkspaceState>,
    _perm: PhantomData<P>,
}

impl<P: Permission> Authorized<P> {
    /// The agent an agent-scoped key is bound to, if any.
    pub fn bound_agent(&self) -> Option<&str> {
        self.key.agent_id.as_deref()
    }

    /// A key bound to one agent sees only that agent's records.
    pub fn may_see(&self, agent_id: Option<&str>) -> bool {
        match self.bound_agent() {
            Some(b) => agent_id == Some(b),
            None => true,
        }
    }

    /// Refuse keys bound to one agent: the whole log spans every agent.
    pub fn whole_workspace(&self) -> Result<(), ApiError> {
        match self.bound_agent() {
            Some(_) => Err(ApiError::new(Code::InsufficientScope, "a key bound to one agent cannot read the whole workspace's log")),
            None => Ok(()),
        }
    }
}

/// Read the presented key from `X-API-Key` or `Authorization: Bearer`.
fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<P: Permission> FromRequestParts<Arc<AppState>> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let presented = presented_key(parts)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::new(Code::MissingApiKey, "send an API key in `X-API-Key` or `Authorization: Bearer`"))?;
        if presented.len() > 256 {
            return Err(ApiError::new(Code::InvalidApiKey, "the API key is not valid"));
        }
        let key = match state.key_for(presented) {
            Some(k) if k.revoked_at.is_none() => k,
            // Revoked here, maybe not yet in the store: the store is not asked.
            Some(_) => return Err(ApiError::new(Code::InvalidApiKey, "the API key is not valid")),
            // Keys made by `praetor keys create` while the server runs are found in the store.
            None => match state.store.api_key_by_hash(&crate::secrets::key_hash(presented)).await? {
                Some(k) if k.revoked_at.is_none() => {
                    state.put_key(k.clone());
                    k
                }
                _ => return Err(ApiError::new(Code::InvalidApiKey, "the API key is not valid")),
            },
        };
        if !key.scopes.iter().any(|s| P::GRANTED_TO.contains(s)) {
            return Err(ApiError::new(
                Code::InsufficientScope,
                format!("this key lacks the `{}` permission", P::NAME),
            ));
        }
        if let Some(barred) = key.scopes.iter().find(|s| P::REFUSED_TO.contains(s)) {
            return Err(ApiError::new(
                Code::InsufficientScope,
                format!("a key with the `{}` scope cannot use the `{}` permission: who acts for agents does not approve for them", barred.as_str(), P::NAME),
            ));
        }
        let workspace = state
            .workspace(&key.workspace_id)
            .ok_or_else(|| ApiError::new(Code::InvalidApiKey, "the key's workspace no longer exists"))?;
        // Everything but the decision path first catches up with what other nodes
        // changed (one read of the change feed), so an object made on one node can be
        // read, changed or revoked through any other at once. Decisions do not wait:
        // the etag guards keep them exact.
        if P::NAME != perm::Enforce::NAME {
            if let Err(e) = crate::follow::follow(state, &workspace).await {
                tracing::warn!(workspace_id = %workspace.workspace_id, error = %e.message, "cannot catch up with the change feed");
            }
            // The key itself may be what another node revoked: checked again as caught up.
            if state.key_for(presented).is_some_and(|k| k.revoked_at.is_some()) {
                return Err(ApiError::new(Code::InvalidApiKey, "the API key is not valid"));
            }
        }
        Ok(Authorized { key, workspace, _perm: PhantomData })
    }
}
