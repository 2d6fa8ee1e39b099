#!/bin/sh
# azd's postprovision hook (azure.yaml): print the tenant admin's commands, with the app identity's
# principal id and the management group filled in, for the subscription owner to send on
# (docs/deploy.md, "Runbook 2: the tenant admin"). It changes nothing.
#
# azd passes the environment's values as variables. Without azd:
#   AZURE_FUNCTION_PRINCIPAL_ID=<id> AUDIT_MANAGEMENT_GROUP_ID=<mg> sh infra/hooks/postprovision.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
principal=${AZURE_FUNCTION_PRINCIPAL_ID:-}
mg=${AUDIT_MANAGEMENT_GROUP_ID:-${AZURE_TENANT_ID:-}}
if [ -z "$principal" ] || [ -z "$mg" ]; then
  echo "postprovision: AZURE_FUNCTION_PRINCIPAL_ID and AUDIT_MANAGEMENT_GROUP_ID (or AZURE_TENANT_ID) are needed" >&2
  exit 1
fi
case "$principal$mg" in
  *[!A-Za-z0-9._-]*) echo "postprovision: unexpected characters in the principal id or management group" >&2; exit 1 ;;
esac
scope="/providers/Microsoft.Management/managementGroups/$mg"
role=$(sed "s/MANAGEMENT_GROUP_ID/$mg/" "$here/../tenant/audit-reader-role.json" | tr -d '\n' | sed 's/  */ /g')

cat <<BANNER

==============================================================================================
 The auditor can read NOTHING until a tenant admin has run the commands below (once; skip this
 if it is done). Until then every run reads zero subscriptions: its outcome is "blind" and it alerts
 (docs/deploy.md, "A run that read nothing").
 Send this block to your tenant admin (docs/deploy.md, "Runbook 2: the tenant admin");
 it needs User Access Administrator (or Owner) at management group $mg.
==============================================================================================
BANNER
cat <<COMMANDS
az role definition create --role-definition '$role'
az role assignment create --assignee-object-id $principal --assignee-principal-type ServicePrincipal --role "Client Certificate Auditor (read-only)" --scope $scope
az role assignment list --assignee $principal --scope $scope --query "[].{role: roleDefinitionName, scope: scope}" -o table
COMMANDS
cat <<'NOTE'
==============================================================================================
 App settings come from the template: `azd env set NAME value` + `azd provision` changes one;
 a setting changed by hand in the portal or with `az functionapp config appsettings set` is
 removed by the next provision.
==============================================================================================
NOTE
