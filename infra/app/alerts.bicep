// Action groups + the log search alert rules over AppTraces in the workspace.
// The queries match the message prefixes defined in shared/core/events.py (NEW_FAILURE_EVENT,
// RUN_SUMMARY_EVENT): "<prefix> <compact JSON>". tests/infra checks that they still do, and
// parses every query with Microsoft's Kusto language service against the AppTraces schema
// (and against a workspace without AppTraces: see "Total before the first log" below).
//
// Routing (docs/deploy.md, "Alert routing"):
// - email (alertEmailAddresses): the per-run digest, "did not run" and "subscriptions failed".
//   At most one email per run and rule, so a mass regression (hundreds of apps failing at once)
//   cannot exceed the action group's limit of about 100 emails an hour per address.
// - ticketing webhook (ticketWebhookUrl): the per-resource rule, one alert per resource, which
//   a ticketing system turns into one ticket per app owner. Without a webhook the per-resource
//   alerts still show in Azure Monitor > Alerts, and the digest reaches people.
//
// Total before the first log: AppTraces exists in a workspace only after the app's first log
// record. A query naming a missing table fails, and Azure Monitor disables a rule whose query
// fails for a week - "did not run" would disable itself on exactly the deployment it is for.
// Every query therefore reads `union isfuzzy=true (AppTraces | ...), (datatable(...)[])`: the
// fuzzy union drops a leg whose table does not exist, and the empty datatable keeps one leg
// that always resolves (a fuzzy union with no resolvable leg is still an error).
//
// Exactly once, even when ingested late: log ingestion can lag by minutes. With the window equal
// to the frequency, a record whose TimeGenerated falls in a window already evaluated is never
// seen. The stateless rules therefore look back over a window longer than their frequency
// (windowSize PT6H, evaluated every PT5M or PT1H) and keep only records *ingested* during the
// last frequency (`ingestion_time() > ago(5m)` or `ago(1h)`): every record is ingested in exactly
// one such interval, so it is counted by exactly one evaluation, as long as it arrives less than
// the window minus the frequency (about 5 hours) after its TimeGenerated.

@description('Name of the Log Analytics workspace that receives the app\'s AppTraces (same resource group).')
param logAnalyticsWorkspaceName string

@description('Azure region of the alert rules (the workspace\'s region).')
param location string = resourceGroup().location

@description('Tags applied to the action groups and the rules.')
param tags object = {}

@description('Name prefix of the alert rules.')
param namePrefix string

@description('Name of the email action group.')
param actionGroupName string

@description('Email addresses notified of the run digest, missed runs and incomplete runs. May be empty: the alerts still fire and show in Azure Monitor.')
param alertEmailAddresses array = []

@description('Create the per-resource rule (one alert per web app or slot that newly fails). The per-run digest is always created.')
param perResourceAlerts bool = true

@description('HTTPS URL of a ticketing system\'s webhook that receives the per-resource alerts (common alert schema). Empty: per-resource alerts notify nobody and show in Azure Monitor only.')
@secure()
param ticketWebhookUrl string = ''

@description('Name of the audited Function app, shown in the alert descriptions.')
param functionAppName string

@description('Optional URL of your copy of the report documentation (docs/security-team.md, section "The report"), added to the digest alert. Empty: the digest names the section.')
param reportDocsUrl string = ''

// Log Analytics Reader: read every table of the workspace, nothing else. Built-in role id.
var logAnalyticsReaderRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '73c42c96-874c-492b-b04d-ab87d138a893')
var useTicketing = !empty(ticketWebhookUrl)
var reportDocs = empty(reportDocsUrl) ? 'docs/security-team.md, section "The report"' : reportDocsUrl

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsWorkspaceName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'certaudit'
    enabled: true
    emailReceivers: [for (address, i) in alertEmailAddresses: {
      name: 'email-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

resource ticketActionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (useTicketing) {
  name: '${actionGroupName}-tickets'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'certticket'
    enabled: true
    webhookReceivers: [
      {
        name: 'ticketing'
        serviceUri: ticketWebhookUrl
        useCommonAlertSchema: true
      }
    ]
  }
}

// (1) Per resource: one alert per web app or slot that newly fails the client-certificate
// audit. Evaluated every 5 minutes, so a failure the change poll finds reaches its owner within
// minutes, not an hour. Stateless (autoMitigate false); window PT6H > frequency PT5M with the
// ingestion-time filter, so each event alerts exactly once (see the top of this file). Optional.
resource newFailureAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (perResourceAlerts) {
  name: '${namePrefix}new-failure'
  location: location
  tags: tags
  kind: 'LogAlert'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    displayName: 'Client certificate audit: new failure'
    description: 'A web app or slot newly fails the incoming client certificate audit (${functionAppName}). One alert per resource (split on ResourceId): route to a ticketing webhook, not to email.'
    severity: 2
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT6H'
    autoMitigate: false
    // The rule's identity gets its role in this deployment, after the rule exists; validating
    // the query at creation would race that assignment.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: '''
union isfuzzy=true
    (AppTraces
    | where Message startswith_cs "ClientCertAudit.NewFailure "
    | project TimeGenerated, Message, IngestedAt = ingestion_time()),
    (datatable(TimeGenerated: datetime, Message: string, IngestedAt: datetime)[])
| where IngestedAt > ago(5m)
| extend e = parse_json(substring(Message, strlen("ClientCertAudit.NewFailure ")))
| extend ResourceId = tostring(e.ResourceId)
| extend AppName = tostring(e.AppName)
| extend Slot = iff(isempty(tostring(e.Slot)), "(production)", tostring(e.Slot))
| extend ClientCertMode = tostring(e.ClientCertMode)
| project TimeGenerated, ResourceId, AppName, Slot, ClientCertMode, SubscriptionId = tostring(e.SubscriptionId), ResourceGroup = tostring(e.ResourceGroup), Kind = tostring(e.Kind), Status = tostring(e.Status), Reason = tostring(e.Reason), RunId = tostring(e.RunId)
'''
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'ResourceId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'AppName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'Slot'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'ClientCertMode'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: useTicketing ? [
        ticketActionGroup.id
      ] : []
    }
  }
}

// (2) Per run: one alert for each run that found new failures or sent owed ones (RunSummary
// NewFailures or AlertsSent > 0: a run that died before its alerts went out has NewFailures 0
// and the run that pays its debt AlertsSent > 0), whatever their number: the digest that
// reaches people by email when hundreds of apps fail at once. Split on RunId; the larger count
// and the report command travel as dimensions. Same exactly-once window as (1).
resource runDigestAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}run-digest'
  location: location
  tags: tags
  kind: 'LogAlert'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    displayName: 'Client certificate audit: new failures in a run'
    description: 'A run of ${functionAppName} found web apps or slots that newly fail the incoming client certificate audit. NewFailures is their number; list them with the Report command (clientcert-audit report --run <RunId> --new; ${reportDocs}).'
    severity: 2
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT6H'
    autoMitigate: false
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: '''
union isfuzzy=true
    (AppTraces
    | where Message startswith_cs "ClientCertAudit.RunSummary "
    | project TimeGenerated, Message, IngestedAt = ingestion_time()),
    (datatable(TimeGenerated: datetime, Message: string, IngestedAt: datetime)[])
| where IngestedAt > ago(1h)
| extend e = parse_json(substring(Message, strlen("ClientCertAudit.RunSummary ")))
| extend NewFailures = max_of(tolong(e.NewFailures), tolong(e.AlertsSent))
| where NewFailures > 0
| extend RunId = tostring(e.RunId)
| project TimeGenerated, RunId, NewFailures = tostring(NewFailures), Outcome = tostring(e.Outcome), Report = strcat("clientcert-audit report --run ", RunId, " --new")
'''
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'RunId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'NewFailures'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'Report'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
      customProperties: {
        Report: 'clientcert-audit report --run <RunId> --new'
        Documentation: reportDocs
      }
    }
  }
}

// (3) The audit did not run: no run summary in the last 26 hours (daily schedule + 2 h slack).
// Stateful (autoMitigate true): one notification, resolved by the next run summary. It must
// work before the app has ever logged: the fuzzy union returns Runs = 0 without AppTraces.
resource missedRunAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}missed-run'
  location: location
  tags: tags
  kind: 'LogAlert'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    displayName: 'Client certificate audit: did not run'
    description: 'No nightly ClientCertAudit.RunSummary from ${functionAppName} in the last 26 hours (change polls do not count): the nightly audit did not run or did not finish.'
    severity: 1
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    // The query filters the last 26 h itself; the rule must let it look that far back.
    overrideQueryTimeRange: 'P2D'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: '''
union isfuzzy=true
    (AppTraces
    | where TimeGenerated > ago(26h)
    | where Message startswith_cs "ClientCertAudit.RunSummary "
    | where tostring(parse_json(substring(Message, strlen("ClientCertAudit.RunSummary "))).Kind) != "changes"
    | project TimeGenerated),
    (datatable(TimeGenerated: datetime)[])
| summarize Runs = count()
'''
          timeAggregation: 'Total'
          metricMeasureColumn: 'Runs'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// (4) A run finished but could not read every subscription (partial), read none at all (blind:
// nothing was audited, never a pass), or failed outright: its results are incomplete, and
// resources in the unread subscriptions were not audited. Same exactly-once window as (1).
resource incompleteRunAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}incomplete-run'
  location: location
  tags: tags
  kind: 'LogAlert'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    displayName: 'Client certificate audit: subscriptions failed'
    description: 'A run of ${functionAppName} reported subscriptions it could not read (Outcome partial), read none at all and audited nothing (Outcome blind: its ERROR row says which role to grant where), or failed: the audit is incomplete.'
    severity: 2
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT6H'
    autoMitigate: false
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: '''
union isfuzzy=true
    (AppTraces
    | where Message startswith_cs "ClientCertAudit.RunSummary "
    | project TimeGenerated, Message, IngestedAt = ingestion_time()),
    (datatable(TimeGenerated: datetime, Message: string, IngestedAt: datetime)[])
| where IngestedAt > ago(1h)
| extend e = parse_json(substring(Message, strlen("ClientCertAudit.RunSummary ")))
| extend Outcome = tostring(e.Outcome)
| extend SubscriptionsFailed = iff(gettype(e.SubscriptionsFailed) == "array", tolong(array_length(e.SubscriptionsFailed)), tolong(e.SubscriptionsFailed))
| where SubscriptionsFailed > 0 or Outcome != "complete"
| project TimeGenerated, RunId = tostring(e.RunId), Outcome, SubscriptionsFailed, SubscriptionsRead = tostring(e.SubscriptionsRead), Total = tolong(e.Total)
'''
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'RunId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'Outcome'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Alert rules run as themselves: Azure Monitor documents that a rule without a managed identity
// runs its query with the permissions of whoever last edited it. Each rule's system-assigned
// identity reads the workspace (Log Analytics Reader) and nothing else. The assignment name
// uses the rule's id (known at compile time); its principal id exists only after deployment.
resource newFailureReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (perResourceAlerts) {
  name: guid(workspace.id, newFailureAlert.id, logAnalyticsReaderRoleId)
  scope: workspace
  properties: {
    roleDefinitionId: logAnalyticsReaderRoleId
    principalId: newFailureAlert.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Alert rule ${newFailureAlert.name} reads the workspace as itself.'
  }
}

resource runDigestReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, runDigestAlert.id, logAnalyticsReaderRoleId)
  scope: workspace
  properties: {
    roleDefinitionId: logAnalyticsReaderRoleId
    principalId: runDigestAlert.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Alert rule ${runDigestAlert.name} reads the workspace as itself.'
  }
}

resource missedRunReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, missedRunAlert.id, logAnalyticsReaderRoleId)
  scope: workspace
  properties: {
    roleDefinitionId: logAnalyticsReaderRoleId
    principalId: missedRunAlert.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Alert rule ${missedRunAlert.name} reads the workspace as itself.'
  }
}

resource incompleteRunReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, incompleteRunAlert.id, logAnalyticsReaderRoleId)
  scope: workspace
  properties: {
    roleDefinitionId: logAnalyticsReaderRoleId
    principalId: incompleteRunAlert.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Alert rule ${incompleteRunAlert.name} reads the workspace as itself.'
  }
}

@description('Resource id of the email action group.')
output actionGroupId string = actionGroup.id

@description('Names of the alert rules.')
output alertRuleNames array = concat(perResourceAlerts ? [
  '${namePrefix}new-failure'
] : [], [
  runDigestAlert.name
  missedRunAlert.name
  incompleteRunAlert.name
])
