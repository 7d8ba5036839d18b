"""Page components: functions that draw one part of the page and return what the user chose."""
