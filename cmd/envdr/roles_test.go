package main

import (
	"testing"

	"github.com/envdr/envdr/internal/config"
	"github.com/envdr/envdr/internal/localaws/iam"
	"github.com/envdr/envdr/internal/localaws/localtest"
)

// commandRoles is the stand-in role each command runs as when deployed (docs/POLICY.md): seal as
// the producer, run as the daemon, rewrap and the recording verify as the rewrap role (it may
// write records), the reading commands as the operator. Commands that use no key (inspect,
// local, policy, version) keep the config's admin credentials.
var commandRoles = map[string]string{
	"seal": iam.RoleProducer, "run": iam.RoleDaemon, "rewrap": iam.RoleRewrap,
	"open": iam.RoleOperator, "drill": iam.RoleOperator, "status": iam.RoleOperator, "doctor": iam.RoleOperator,
}

// roleConfigs writes cfg once per role and, for an envdr command line, names the --config of
// the role that runs it: the keys carry the rendered key policies, which let the admin manage
// them but not use them.
type roleConfigs struct {
	t     *testing.T
	env   *localtest.Env
	cfg   *config.Config
	admin string
	paths map[string]string
}

func newRoleConfigs(t *testing.T, env *localtest.Env, cfg *config.Config) *roleConfigs {
	t.Helper()
	if cfg == nil {
		cfg = env.Config
	}
	return &roleConfigs{t: t, env: env, cfg: cfg, admin: writeConfig(t, cfg), paths: map[string]string{}}
}

// path is the --config for args (global flags first, then the command and its flags).
func (r *roleConfigs) path(args ...string) string {
	r.t.Helper()
	role := ""
	for i, a := range args {
		if len(a) > 0 && a[0] == '-' {
			continue
		}
		role = commandRoles[a]
		switch {
		case a == "verify":
			role = iam.RoleRewrap
			for _, f := range args[i:] {
				if f == "--no-write" {
					role = iam.RoleOperator
				}
			}
		case a == "drill" && i+1 < len(args) && args[i+1] == "verify-report":
			role = ""
		}
		break
	}
	if role == "" {
		return r.admin
	}
	if p, ok := r.paths[role]; ok {
		return p
	}
	p := r.env.ConfigPathAs(r.cfg, role)
	r.paths[role] = p
	return p
}
